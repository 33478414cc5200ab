"""LoRA adapters served by name (`pagoda serve --lora NAME=PATH`), checked through the official
`openai` client against an independent reference: the same base with the adapter MERGED into its
weights by NumPy (lora_synth.py), served as a plain model by the same process. Requests for the
adapters, for the merged models and for the base run concurrently, so adapter rows and base rows
share batches."""
import concurrent.futures as cf

import pytest

from lora_synth import make_adapter, make_merged
from serve_harness import Server

openai = pytest.importorskip("openai")

PROMPTS = ["def add(a, b):", "import os\n\ndef list_files(path):", "class Stack:\n    def __init__(self):"]


@pytest.fixture(scope="module")
def server(shared, pagoda_bin, tmp_path_factory):
    base = shared / "models" / "pycoder-tiny"
    if not base.exists():
        pytest.skip(f"{base} not found")
    tmp = tmp_path_factory.mktemp("lora")
    specs = {"attn": dict(r=8, alpha=16, targets=("q_proj", "k_proj", "v_proj", "o_proj"), seed=1),
             "mlp": dict(r=4, alpha=8, targets=("gate_proj", "up_proj", "down_proj"), seed=2, use_rslora=True)}
    args = []
    for name, spec in specs.items():
        deltas = make_adapter(base, tmp / name, **spec)
        make_merged(base, deltas, tmp / f"merged-{name}")
        args += ["--lora", f"{name}={tmp / name}", "-m", f"merged-{name}={tmp / f'merged-{name}'}"]
    args += ["--lora", f"broken={tmp / 'missing-adapter'}"]
    s = Server(pagoda_bin, base, *args, "--kv-mem", "32M", "--threads", "2")
    yield s
    s.close()


def complete(client, model, prompt):
    r = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0)
    return r.model, r.choices[0].text


def test_adapters_equal_merged_weights(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    jobs = [(m, p) for p in PROMPTS for m in ("attn", "mlp", "merged-attn", "merged-mlp", server.model_name)]
    with cf.ThreadPoolExecutor(8) as ex:
        out = dict(zip(jobs, ex.map(lambda j: complete(client, *j), jobs)))
    differs = 0
    for p in PROMPTS:
        for name in ("attn", "mlp"):
            model, text = out[(name, p)]
            assert model == name
            assert text == out[(f"merged-{name}", p)][1], (name, p)
            differs += text != out[(server.model_name, p)][1]
    assert differs >= 3, "the adapters barely change the output: the test would not see one not applied"


def test_broken_adapter_is_a_clear_error_and_others_serve(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    with pytest.raises(openai.APIStatusError) as e:
        complete(client, "broken", "x")
    assert "adapter 'broken' failed to load" in str(e.value)
    assert complete(client, "attn", PROMPTS[0])[0] == "attn"
    assert "adapter 'broken'" in server.text() and "adapter 'attn' loaded" in server.text()
