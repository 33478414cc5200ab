"""`pagoda imatrix` against an independent computation of llama-imatrix's statistics: a float64 NumPy
forward pass (np_llama.py, with a hook on every layer product) over a test-sized F32 llama with
Llama 2's tokenizer (`pagoda synth`), on the token ids `pagoda tokenize` gives for the text, cut as
llama-imatrix cuts them (chunks of n_ctx from the start, BOS as each chunk's first input, every
token counted). Per weight: the sums of squares of its input columns (in_sum2), the sums (in_sum)
and the row count, in both of llama.cpp's formats; each column within 1e-3 (float32 activations
against float64). The files must then work with `pagoda quantize --imatrix`, and where the anchor
llama.cpp is there, llama-quantize --imatrix with the .dat must write the same bytes as pagoda
quantize with it."""
import gzip
import json
import os
import struct
import subprocess
import tarfile

import pytest

from np_llama import llama_hidden

np = pytest.importorskip("numpy")
gguf = pytest.importorskip("gguf")

ANCHOR = "anchors/llama.cpp-c392e50-cpu-native.tar.xz"
N_CTX, CHUNKS = 128, 3


@pytest.fixture(scope="module")
def setup(shared, run_pagoda, tmp_path_factory):
    d = tmp_path_factory.mktemp("imatrix")
    vocab = shared / "fixtures" / "tokenizers" / "ggml-vocab-llama-spm.gguf"
    he = shared / "data" / "HumanEval.jsonl.gz"
    for p in (vocab, he):
        if not p.exists():
            pytest.skip(f"{p} not found")
    model = d / "m.gguf"
    run_pagoda("synth", "--shape", "tiny-llama-32k", "--type", "f32", "--vocab-from", vocab, "-o", model)
    text = d / "text.txt"
    with gzip.open(he, "rt") as f:
        text.write_text("\n".join(o["prompt"] + o["canonical_solution"] for o in map(json.loads, list(f)[:12])))
    out = run_pagoda("tokenize", "-m", model, "--ids", "--add-special", "--no-special", text.read_text()).stdout
    ids = [int(t) for t in out.split()]
    assert ids[0] == 1 and len(ids) >= (CHUNKS + 1) * N_CTX, len(ids)  # BOS first; more than CHUNKS chunks
    return d, model, text, ids


@pytest.fixture(scope="module")
def reference(setup):
    """{weight: (sum of x^2 per column, sum of x per column, rows)} over the chunks, float64; the
    LM head's input (final hidden states) under "output.weight"."""
    _, model, _, ids = setup
    acc = {}

    def hook(name, x):
        s2, s, n = acc.get(name, (0.0, 0.0, 0))
        acc[name] = (s2 + (x * x).sum(0), s + x.sum(0), n + x.shape[0])

    inputs = [[1] + ids[c * N_CTX + 1:(c + 1) * N_CTX] for c in range(CHUNKS)]  # BOS replaces the first token
    hidden = llama_hidden(model, inputs, hook)
    hook("output.weight", np.concatenate(hidden))
    return acc


def read_gguf(path):
    r = gguf.GGUFReader(str(path))
    f = r.fields

    def val(k):
        return f[k].parts[f[k].data[0]]

    meta = {
        "type": bytes(val("general.type")).decode(),
        "datasets": [bytes(f["imatrix.datasets"].parts[i]).decode() for i in f["imatrix.datasets"].data],
        "chunk_count": int(val("imatrix.chunk_count")[0]),
        "chunk_size": int(val("imatrix.chunk_size")[0]),
    }
    tensors = {t.name: t for t in r.tensors}
    return meta, tensors, [t.name for t in r.tensors]


def read_dat(path):
    b = path.read_bytes()
    n, = struct.unpack_from("<i", b, 0)
    o, entries = 4, {}
    for _ in range(n):
        ln, = struct.unpack_from("<i", b, o)
        name = b[o + 4:o + 4 + ln].decode()
        o += 4 + ln
        ncall, nval = struct.unpack_from("<ii", b, o)
        entries[name] = (ncall, np.frombuffer(b, "<f4", nval, o + 8).astype(np.float64))
        o += 8 + 4 * nval
    chunks, dlen = struct.unpack_from("<ii", b, o)
    dataset = b[o + 8:o + 8 + dlen].decode()
    assert o + 8 + dlen == len(b)
    return list(entries), entries, chunks, dataset


def rel_err(got, want):
    return float(np.max(np.abs(got - want) / np.abs(want)))


def test_gguf_matches_reference(setup, reference, run_pagoda):
    d, model, text, _ = setup
    out = d / "im.gguf"
    r = run_pagoda("imatrix", "-m", model, "-f", text, "-o", out, "-c", N_CTX, "--chunks", CHUNKS)
    assert f"chunk {CHUNKS}/{CHUNKS}" in r.stderr
    meta, t, order = read_gguf(out)
    assert meta == {"type": "imatrix", "datasets": [str(text)], "chunk_count": CHUNKS, "chunk_size": N_CTX}
    names = sorted(k for k in reference if k.startswith("blk."))
    assert len(names) == 2 * 7
    # per tensor, in name order: in_sum2, counts, in_sum (llama-imatrix's layout); no head, no embedding
    assert order == [n + s for n in names for s in (".in_sum2", ".counts", ".in_sum")]
    worst = worst_sum = 0.0
    for n in names:
        s2, s, rows = reference[n]
        assert list(t[n + ".in_sum2"].shape) == [len(s2), 1] and list(t[n + ".counts"].shape) == [1, 1]
        assert float(t[n + ".counts"].data[0, 0]) == rows == CHUNKS * N_CTX
        worst = max(worst, rel_err(t[n + ".in_sum2"].data.reshape(-1).astype(np.float64), s2))
        # sums cancel: their error is measured against the size of the terms (sqrt(rows * sum x^2))
        got = t[n + ".in_sum"].data.reshape(-1).astype(np.float64)
        worst_sum = max(worst_sum, float(np.max(np.abs(got - s) / np.sqrt(rows * s2))))
    print(f"in_sum2 worst relative error {worst:.2e}, in_sum worst scaled error {worst_sum:.2e} over {len(names)} tensors")
    assert worst <= 1e-3 and worst_sum <= 1e-3
    # the chunks' first tokens as in the text instead of BOS must be seen (so the rule is tested)
    _, _, _, ids = setup
    plain = {}
    llama_hidden(model, [ids[c * N_CTX:(c + 1) * N_CTX] for c in range(CHUNKS)],
                 lambda n, x: plain.__setitem__(n, plain.get(n, 0.0) + (x * x).sum(0)))
    off = rel_err(t["blk.0.attn_q.weight.in_sum2"].data.reshape(-1).astype(np.float64), plain["blk.0.attn_q.weight"])
    print(f"without BOS as each chunk's first input: {off:.2e}")
    assert off > 1e-2


def test_dat_matches_reference(setup, reference, run_pagoda):
    d, model, text, _ = setup
    out = d / "im.dat"
    run_pagoda("imatrix", "-m", model, "-f", text, "-o", out, "-c", N_CTX, "--chunks", CHUNKS, "--output-format", "dat",
               "--no-ppl")
    order, entries, chunks, dataset = read_dat(out)
    names = sorted(k for k in reference if k.startswith("blk."))
    assert order == names and chunks == CHUNKS and dataset == str(text)
    worst = 0.0
    for n in names:
        s2, _, rows = reference[n]
        ncall, v = entries[n]
        assert ncall == -(-rows // N_CTX) == CHUNKS  # ceil(rows / chunk size)
        worst = max(worst, rel_err(v / ncall, s2 / rows))  # values are mean squares times ncall
    print(f".dat mean squares worst relative error {worst:.2e}")
    assert worst <= 1e-3


def test_process_output_and_all_chunks(setup, reference, run_pagoda):
    """--process-output adds the LM head's input; without --chunks every whole chunk is used."""
    d, model, text, ids = setup
    out = d / "head.gguf"
    run_pagoda("imatrix", "-m", model, "-f", text, "-o", out, "-c", N_CTX, "--process-output", "--no-ppl")
    meta, t, _ = read_gguf(out)
    assert meta["chunk_count"] == len(ids) // N_CTX
    out = d / "head3.gguf"
    run_pagoda("imatrix", "-m", model, "-f", text, "-o", out, "-c", N_CTX, "--chunks", CHUNKS, "--process-output")
    _, t, _ = read_gguf(out)
    s2, _, rows = reference["output.weight"]
    assert float(t["output.weight.counts"].data[0, 0]) == rows == CHUNKS * N_CTX
    err = rel_err(t["output.weight.in_sum2"].data.reshape(-1).astype(np.float64), s2)
    print(f"output.weight in_sum2 worst relative error {err:.2e}")
    assert err <= 1e-3 and "token_embd.weight.in_sum2" not in t


def llama_quantize_exe(shared, d):
    tar = shared / ANCHOR
    if not tar.exists():
        return None
    with tarfile.open(tar) as t:
        t.extractall(d, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(d)
    return next(p for p in d.rglob("llama-quantize") if p.is_file())


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q5_0"])
def test_quantize_with_it(setup, run_pagoda, pagoda_bin, shared, tmp_path, qtype):
    """Both files drive pagoda quantize; with the .dat, llama-quantize writes the same bytes."""
    d, model, text, _ = setup
    for fmt in ("gguf", "dat"):
        run_pagoda("imatrix", "-m", model, "-f", text, "-o", tmp_path / f"im.{fmt}", "-c", N_CTX, "--chunks", CHUNKS,
                   "--output-format", fmt, "--no-ppl")
    # the imatrix path is recorded in the output: the same relative name "imatrix" for both tools
    (tmp_path / "imatrix").write_bytes((tmp_path / "im.dat").read_bytes())
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "imatrix").write_bytes((tmp_path / "im.gguf").read_bytes())
    for cwd in (tmp_path, tmp_path / "g"):
        r = subprocess.run([str(pagoda_bin), "quantize", "--imatrix", "imatrix", str(model), "mine.gguf", qtype], cwd=cwd,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    exe = llama_quantize_exe(shared, tmp_path / "llama")
    if exe is None:
        pytest.skip(f"{ANCHOR} not found: pagoda quantize ran with both files, nothing to compare with")
    r = subprocess.run([str(exe), "--imatrix", "imatrix", str(model), "ref.gguf", qtype], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, LD_LIBRARY_PATH=str(exe.parent)))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "imatrix" in r.stdout + r.stderr
    assert (tmp_path / "mine.gguf").read_bytes() == (tmp_path / "ref.gguf").read_bytes(), f"{qtype}: differs"


def test_bad_input(setup, run_pagoda, tmp_path):
    _, model, text, _ = setup
    out = tmp_path / "o.gguf"
    r = run_pagoda("imatrix", "-m", model, "-f", tmp_path / "missing.txt", "-o", out, check=False)
    assert r.returncode == 1 and "cannot read" in r.stderr and not out.exists()
    short = tmp_path / "short.txt"
    short.write_text("def f(): pass\n" * 20)
    r = run_pagoda("imatrix", "-m", model, "-f", short, "-o", out, "-c", N_CTX, check=False)
    assert r.returncode == 1 and "at least 256" in r.stderr and not out.exists(), r.stderr
    r = run_pagoda("imatrix", "-m", model, "-f", text, "-o", tmp_path / "no" / "such" / "dir.gguf", check=False)
    assert r.returncode == 1 and "cannot write" in r.stderr
    r = run_pagoda("imatrix", "-m", model, "-f", text, "-o", out, "--output-format", "txt", check=False)
    assert r.returncode == 2
    assert run_pagoda("imatrix", "-m", model, "-f", text, check=False).returncode == 2  # no -o
    assert run_pagoda("imatrix", "-m", model, "-f", text, "-o", out, "-c", "x", check=False).returncode == 2


def test_hugging_face_folder_refused(shared, run_pagoda, setup, tmp_path):
    """Its tensor names are not llama.cpp's: refused with the way out (convert to GGUF first)."""
    hf = shared / "models" / "pycoder-tiny"
    if not (hf / "tokenizer.json").exists():
        pytest.skip("pycoder-tiny not in ../shared")
    _, _, text, _ = setup
    r = run_pagoda("imatrix", "-m", hf, "-f", text, "-o", tmp_path / "o.gguf", "-c", 64, check=False)
    assert r.returncode == 1 and "convert it to GGUF first" in r.stderr, r.stderr


def test_real_model(builtin_model, setup, run_pagoda, tmp_path):
    """SmolLM2-135M (Q4_1 weights): every layer's 7 products collected, a sane perplexity, and
    the file drives pagoda quantize."""
    _, _, text, _ = setup
    out = tmp_path / "smol.gguf"
    r = run_pagoda("imatrix", "-m", builtin_model, "-f", text, "-o", out, "-c", 256, "--chunks", 2)
    ppl = float(r.stdout.split("PPL = ")[1].split()[0])
    meta, t, _ = read_gguf(out)
    n_layer = len({n.split(".")[1] for n in t})
    print(f"SmolLM2: {len(t) // 3} tensors over {n_layer} layers, PPL {ppl:.3f}")
    assert len(t) == 3 * 7 * n_layer == 3 * 7 * 30 and meta["chunk_count"] == 2 and 2 < ppl < 30
    assert all(float(t[n].data[0, 0]) == 512 for n in t if n.endswith(".counts"))
    run_pagoda("quantize", "--allow-requantize", "--imatrix", out, builtin_model, tmp_path / "q.gguf", "Q4_K_M")
