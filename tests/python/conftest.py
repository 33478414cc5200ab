import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _shared():
    p = pathlib.Path(os.environ.get("PAGODA_SHARED", ROOT.parent / "shared"))
    return p if (p / "DESIGN.md").exists() else None


@pytest.fixture(scope="session")
def shared():
    p = _shared()
    if p is None:
        pytest.skip("../shared not found (set PAGODA_SHARED): reference fixtures unavailable")
    return p


@pytest.fixture(scope="session")
def pagoda_bin():
    b = os.environ.get("PAGODA_BIN", str(ROOT / "build" / "pagoda"))
    if not os.path.exists(b):
        pytest.skip(f"pagoda CLI not built at {b}")
    return b


@pytest.fixture(scope="session")
def run_pagoda(pagoda_bin):
    def run(*args, timeout=300, check=True):
        r = subprocess.run([pagoda_bin, *map(str, args)], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"pagoda {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
        return r
    return run


@pytest.fixture(scope="session")
def builtin_model():
    p = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not p.exists():
        pytest.skip("built-in model not fetched (run scripts/fetch-model.sh)")
    return p


@pytest.fixture(scope="session")
def hermes_model(tmp_path_factory, builtin_model, shared):
    """The built-in model with Qwen3's chat template (from ../shared/fixtures/tokenizers/qwen3-hf,
    set with gguf-py's gguf_new_metadata): it renders tools and writes calls as <tool_call> blocks
    (the hermes format), served as "smol-hermes"."""
    import sys
    pytest.importorskip("gguf")
    cfg = shared / "fixtures" / "tokenizers" / "qwen3-hf" / "tokenizer_config.json"
    if not cfg.exists():
        pytest.skip(f"{cfg} not found")
    out = tmp_path_factory.mktemp("tools") / "smol-hermes.gguf"
    r = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--chat-template-config", str(cfg),
                        str(builtin_model), str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out
