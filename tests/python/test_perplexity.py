"""`pagoda perplexity` against an independent computation of llama-perplexity's figure: a float64
NumPy forward pass (np_llama.py) over a test-sized F32 llama with Llama 2's tokenizer (`pagoda
synth`), on token ids from llama.cpp's own llama-tokenize (../shared/anchors), chunked and scored
as llama-perplexity does (chunks of n_ctx from position 0, BOS as each chunk's first input, the
second half of each chunk scored). The perplexity must agree within 0.1% (the issue's bound
against llama-perplexity, whose forward pass does not run on every CPU this runs on); scoring the
whole chunk instead must not agree (so the rule is what is tested). The KL divergence report is
checked against KL computed in NumPy from the two models' logits (`pagoda logits`)."""
import gzip
import json
import os
import re
import subprocess
import tarfile

import pytest

from np_llama import llama_logits

np = pytest.importorskip("numpy")
pytest.importorskip("gguf")
st = pytest.importorskip("safetensors.numpy")

ANCHOR = "anchors/llama.cpp-c392e50-cpu-native.tar.xz"
N_CTX, CHUNKS = 128, 3


@pytest.fixture(scope="module")
def setup(shared, run_pagoda, tmp_path_factory):
    d = tmp_path_factory.mktemp("ppl")
    vocab = shared / "fixtures" / "tokenizers" / "ggml-vocab-llama-spm.gguf"
    tar, he = shared / ANCHOR, shared / "data" / "HumanEval.jsonl.gz"
    for p in (vocab, tar, he):
        if not p.exists():
            pytest.skip(f"{p} not found")
    model = d / "m.gguf"
    run_pagoda("synth", "--shape", "tiny-llama-32k", "--type", "f32", "--vocab-from", vocab, "-o", model)
    text = d / "text.txt"
    with gzip.open(he, "rt") as f:
        text.write_text("\n".join(o["prompt"] + o["canonical_solution"] for o in map(json.loads, list(f)[:12])))
    with tarfile.open(tar) as t:
        t.extractall(d / "llama", filter="data") if hasattr(tarfile, "data_filter") else t.extractall(d / "llama")
    exe = next(p for p in (d / "llama").rglob("llama-tokenize") if p.is_file())
    r = subprocess.run([str(exe), "-m", str(model), "-f", str(text), "--ids", "--log-disable"], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, LD_LIBRARY_PATH=str(exe.parent)))
    assert r.returncode == 0, r.stderr[-2000:]
    ids = json.loads(r.stdout.strip().splitlines()[-1])
    assert ids[0] == 1 and len(ids) >= CHUNKS * N_CTX, len(ids)  # BOS first; enough text
    return model, text, ids


def ppl_of(out):
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+) \((\d+) tokens scored", out)
    assert m, out
    return float(m.group(1)), float(m.group(2)), int(m.group(3))


def reference(model, ids, whole=False):
    chunks = [list(ids[c * N_CTX:(c + 1) * N_CTX]) for c in range(CHUNKS)]
    inputs = [[1] + ch[1:] for ch in chunks]  # BOS replaces each chunk's first token
    nll = []
    for ch, lg in zip(chunks, llama_logits(model, inputs)):
        lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
        first = 0 if whole else N_CTX // 2
        nll += [lse[p] - lg[p, ch[p + 1]] for p in range(first, N_CTX - 1)]
    return float(np.exp(np.mean(nll))), len(nll)


def test_perplexity_equals_reference(setup, run_pagoda):
    model, text, ids = setup
    got, err, n = ppl_of(run_pagoda("perplexity", "-m", model, "-f", text, "-c", N_CTX, "--chunks", CHUNKS).stdout)
    want, n_want = reference(model, ids)
    whole, _ = reference(model, ids, whole=True)
    print(f"pagoda PPL {got:.4f} +/- {err:.4f} ({n} tokens), NumPy {want:.4f} ({n_want}); whole chunks {whole:.4f}")
    assert n == n_want == CHUNKS * (N_CTX - 1 - N_CTX // 2)
    assert abs(got / want - 1) < 1e-3
    assert abs(whole / want - 1) > 1e-3, "scoring the whole chunk gives the same figure: the test could not see it"


def test_kl_divergence(setup, run_pagoda, tmp_path):
    model, text, ids = setup
    q4 = tmp_path / "q4_0.gguf"
    run_pagoda("quantize", model, q4, "Q4_0")
    base = tmp_path / "base.kld"
    run_pagoda("perplexity", "-m", model, "-f", text, "-c", N_CTX, "--chunks", CHUNKS, "--kl-divergence-base", base)
    same = run_pagoda("perplexity", "-m", model, "-f", text, "-c", N_CTX, "--chunks", CHUNKS,
                      "--kl-divergence-base", base, "--kl-divergence").stdout
    assert re.search(r"Mean +KLD: +0\.0+ ", same) and re.search(r"Same top p: +100\.000", same), same
    out = run_pagoda("perplexity", "-m", q4, "-f", text, "-c", N_CTX, "--chunks", CHUNKS, "--kl-divergence-base", base,
                     "--kl-divergence").stdout
    mean_kld = float(re.search(r"Mean +KLD: +([0-9.]+)", out).group(1))
    top = float(re.search(r"Same top p: +([0-9.]+)", out).group(1))
    # the same statistics from both models' raw logits (pagoda logits), computed here
    inputs = np.array([[1] + ids[c * N_CTX + 1:(c + 1) * N_CTX] for c in range(CHUNKS)], dtype=np.int32)
    st.save_file({"input_ids": inputs}, str(tmp_path / "ids.safetensors"))
    lp = {}
    for name, m in (("base", model), ("q4", q4)):
        run_pagoda("logits", "-m", m, "-i", tmp_path / "ids.safetensors", "-o", tmp_path / f"{name}.safetensors")
        lg = st.load_file(str(tmp_path / f"{name}.safetensors"))["logits"][:, N_CTX // 2:N_CTX - 1].astype(np.float64)
        lp[name] = lg - (np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) + lg.max(-1, keepdims=True))
    kl = (np.exp(lp["base"]) * (lp["base"] - lp["q4"])).sum(-1)
    agree = (lp["base"].argmax(-1) == lp["q4"].argmax(-1)).mean() * 100
    print(f"pagoda mean KLD {mean_kld:.6f}, top-1 {top:.3f}%; NumPy {kl.mean():.6f}, {agree:.3f}%")
    assert mean_kld > 1e-4, "Q4_0 must move the distribution"
    assert abs(mean_kld - kl.mean()) <= 1e-3 * kl.mean() + 2e-6
    assert abs(top - agree) < 1e-6 + 100 / kl.size / 2


def test_bad_input(setup, run_pagoda, tmp_path):
    model, text, _ = setup
    short = tmp_path / "short.txt"
    short.write_text("def f(): pass\n")
    r = run_pagoda("perplexity", "-m", model, "-f", short, check=False)
    assert r.returncode == 1 and "at least" in r.stderr
    assert run_pagoda("perplexity", "-m", model, "-f", tmp_path / "missing.txt", check=False).returncode == 1
    assert run_pagoda("perplexity", "-m", model, "-f", text, "-c", "x", check=False).returncode == 2
    bad = tmp_path / "bad.kld"
    bad.write_bytes(b"not a base file")
    r = run_pagoda("perplexity", "-m", model, "-f", text, "-c", N_CTX, "--chunks", 1, "--kl-divergence-base", bad,
                   "--kl-divergence", check=False)
    assert r.returncode == 1 and "not a KL base file" in r.stderr
