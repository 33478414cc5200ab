"""`pagoda quantize --imatrix` against llama-quantize --imatrix from the anchor llama.cpp build: the
output files must be byte-identical.

The input is a small llama-shaped F16 GGUF made here with NumPy from a fixed seed (8 layers, so the
first eighth is layer 0: Q4_0 / Q5_0 give its ffn_down Q4_1 / Q5_1 when an imatrix is given), and a
synthetic imatrix for it in both of llama.cpp's formats: random positive sums of squares and integer
call counts for every 2-D weight except token_embd.weight (a real imatrix has no entry for it, so
the "no entry" path is exercised too). The legacy .dat stores the sums with ncall = count; the GGUF
stores in_sum2 and counts; llama-quantize's per-column weight is sum / count either way, so both
files must give the same output.

The anchor llama.cpp (c392e50) reads only the legacy format, so the GGUF case is compared with
llama-quantize's output for the equivalent .dat. The imatrix file's path is written into the
output (quantize.imatrix.file): every run uses the relative name "imatrix" from its own directory.

Without the anchor, the Q4_0, Q8_0, Q4_K_M and Q6_K outputs are checked against SHA-256 hashes of
llama-quantize's output taken once on this same input (they depend on the gguf package writing
the input the same way)."""
import hashlib
import os
import struct
import subprocess
import tarfile

import numpy as np
import pytest

from conftest import _shared  # noqa: E402

gguf = pytest.importorskip("gguf")

ANCHOR = "anchors/llama.cpp-c392e50-cpu-native.tar.xz"
TYPES = ["Q4_0", "Q8_0", "Q4_K_M", "Q6_K", "Q4_K_S", "Q5_K_M", "Q4_1", "Q5_0", "Q5_1", "Q5_K_S"]
# sha256 of llama-quantize --imatrix output on make_model() + make_imatrix() (llama.cpp c392e50)
REF_SHA256 = {
    "Q4_0": "43c7b6eb8f6ca29acb04432cc717d650ca80e95c64132dab4f33bf0e244e81c4",
    "Q8_0": "1d96ee5b359ac5335d3712bf0f50d0b3f5be35111925d9205ecdcc60ab156c83",
    "Q4_K_M": "50d6d7889b7a0b481433574c0904b2dcc40ab8c7b37dada888e22f9fd6c8cda7",
    "Q6_K": "f460cd3404f29107865ec3a69a312759f8cb3d17ee51550a8c24eba4d644c25c",
}
N_LAYER, N_EMBD, N_FF, N_VOCAB, N_KV = 8, 256, 512, 320, 64


def make_model(path):
    """A llama-shaped F16 GGUF with random weights (seed 0)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(N_LAYER)
    w.add_context_length(256)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(8)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // 8)
    w.add_vocab_size(N_VOCAB)
    rng = np.random.default_rng(0)

    def t(name, *shape):
        x = rng.standard_normal(shape) * 0.02
        x[..., rng.integers(0, shape[-1], 4)] *= 8  # a few outlier columns, as real weights have
        w.add_tensor(name, x.astype(np.float16))
    t("token_embd.weight", N_VOCAB, N_EMBD)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    t("output.weight", N_VOCAB, N_EMBD)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, np.float32))
        t(p + "attn_q.weight", N_EMBD, N_EMBD)
        t(p + "attn_k.weight", N_KV, N_EMBD)
        t(p + "attn_v.weight", N_KV, N_EMBD)
        t(p + "attn_output.weight", N_EMBD, N_EMBD)
        t(p + "ffn_gate.weight", N_FF, N_EMBD)
        t(p + "ffn_up.weight", N_FF, N_EMBD)
        t(p + "ffn_down.weight", N_EMBD, N_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def imatrix_entries(model):
    """{name: (sums, count)} for every 2-D weight but token_embd.weight: sums of squares (float32,
    one per column) and an integer call count (seed 1)."""
    rng = np.random.default_rng(1)
    out = {}
    for t in gguf.GGUFReader(str(model)).tensors:
        if not t.name.endswith(".weight") or len(t.shape) < 2 or t.name == "token_embd.weight":
            continue
        count = int(rng.integers(1, 200))
        sums = (rng.uniform(0.001, 5.0, int(t.shape[0])) ** 2 * count).astype(np.float32)
        out[t.name] = (sums, count)
    return out


def write_dat(path, entries, chunks=7, dataset="synthetic.txt"):
    """llama.cpp's legacy imatrix: entries, then the chunk count and dataset name."""
    b = bytearray(struct.pack("<i", len(entries)))
    for name, (sums, count) in entries.items():
        n = name.encode()
        b += struct.pack("<i", len(n)) + n + struct.pack("<ii", count, len(sums)) + sums.astype("<f4").tobytes()
    d = dataset.encode()
    b += struct.pack("<ii", chunks, len(d)) + d
    path.write_bytes(bytes(b))


def write_gguf_imatrix(path, entries, chunks=7, dataset="synthetic.txt"):
    """llama.cpp's GGUF imatrix: <name>.in_sum2 [n_col, 1] and <name>.counts [1, 1] per tensor."""
    w = gguf.GGUFWriter(str(path), "imatrix")
    w.add_array("imatrix.datasets", [dataset])
    w.add_uint32("imatrix.chunk_count", chunks)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, count) in entries.items():
        w.add_tensor(name + ".in_sum2", sums.reshape(1, -1))
        w.add_tensor(name + ".counts", np.array([[float(count)]], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("imx")
    model = d / "model-f16.gguf"
    make_model(model)
    entries = imatrix_entries(model)
    (d / "dat").mkdir()
    (d / "gguf").mkdir()
    write_dat(d / "dat" / "imatrix", entries)
    write_gguf_imatrix(d / "gguf" / "imatrix", entries)
    return {"dir": d, "model": model, "entries": entries}


@pytest.fixture(scope="module")
def llama_quantize(tmp_path_factory):
    shared = _shared()  # the same ../shared (or PAGODA_SHARED) as the other tests
    tar = shared / ANCHOR if shared else None
    if tar is None or not tar.exists():
        return None
    d = tmp_path_factory.mktemp("llama")
    with tarfile.open(tar) as t:
        t.extractall(d, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(d)
    exe = next(p for p in d.rglob("llama-quantize") if p.is_file())
    exe.chmod(0o755)

    def run(*args, cwd):
        env = dict(os.environ, LD_LIBRARY_PATH=str(exe.parent))
        r = subprocess.run([str(exe), *map(str, args), "2"], capture_output=True, text=True, env=env, cwd=cwd,
                           timeout=300)
        assert r.returncode == 0, f"llama-quantize {args} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    return run


def pagoda(pagoda_bin, *args, cwd, check=True):
    r = subprocess.run([pagoda_bin, "quantize", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                       timeout=300)
    if check:
        assert r.returncode == 0, f"pagoda quantize {args} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def first_tensor_difference(mine, ref):
    a, b = gguf.GGUFReader(mine).tensors, gguf.GGUFReader(ref).tensors
    for x, y in zip(a, b):
        if x.name != y.name or x.tensor_type != y.tensor_type or x.data.tobytes() != y.data.tobytes():
            return f"tensor {x.name}: pagoda {x.tensor_type.name}, llama-quantize {y.name} {y.tensor_type.name}"
    return "tensors equal (metadata differs)" if len(a) == len(b) else f"{len(a)} vs {len(b)} tensors"


@pytest.mark.parametrize("qtype", TYPES)
def test_imatrix_identical(pagoda_bin, llama_quantize, work, qtype):
    d, model = work["dir"], work["model"]
    mine_dat, mine_gguf = d / f"mine-dat-{qtype}.gguf", d / f"mine-gguf-{qtype}.gguf"
    r = pagoda(pagoda_bin, "--imatrix", "imatrix", model, mine_dat, qtype, "-t", "2", cwd=d / "dat")
    assert "legacy .dat" in r.stderr and "token_embd.weight: no imatrix entry" in r.stderr or qtype == "Q8_0", r.stderr
    r = pagoda(pagoda_bin, "--imatrix", "imatrix", model, mine_gguf, qtype, "-t", "2", cwd=d / "gguf")
    assert "(GGUF)" in r.stderr, r.stderr
    assert mine_dat.read_bytes() == mine_gguf.read_bytes(), "the .dat and GGUF imatrix gave different files"
    md = gguf.GGUFReader(mine_dat)
    kv = {f.name: f for f in md.fields.values()}
    assert bytes(kv["quantize.imatrix.file"].parts[-1]).decode() == "imatrix"
    assert bytes(kv["quantize.imatrix.dataset"].parts[-1]).decode() == "synthetic.txt"
    assert int(kv["quantize.imatrix.entries_count"].parts[-1][0]) == len(work["entries"])
    assert int(kv["quantize.imatrix.chunks_count"].parts[-1][0]) == 7
    types = {t.name: t.tensor_type.name for t in md.tensors}
    if qtype in ("Q4_0", "Q5_0"):  # the imatrix-only rule: first eighth of ffn_down one step up
        up = {"Q4_0": "Q4_1", "Q5_0": "Q5_1"}[qtype]
        assert types["blk.0.ffn_down.weight"] == up and types["blk.1.ffn_down.weight"] == qtype
    if llama_quantize is None:
        want = REF_SHA256.get(qtype)
        if want is None:
            pytest.skip(f"{ANCHOR} not found and no reference hash for {qtype}: nothing to compare with")
        assert hashlib.sha256(mine_dat.read_bytes()).hexdigest() == want, f"{qtype}: differs from llama-quantize's hash"
        return
    ref = d / f"ref-{qtype}.gguf"
    llama_quantize("--imatrix", "imatrix", model, ref, qtype, cwd=d / "dat")
    if mine_dat.read_bytes() != ref.read_bytes():
        pytest.fail(f"{qtype}: pagoda differs from llama-quantize: {first_tensor_difference(mine_dat, ref)}")


def test_imatrix_pure_and_without_weights(pagoda_bin, llama_quantize, work):
    """--pure with an imatrix, and an imatrix whose entries match no tensor (weights unused, keys
    still written)."""
    d, model = work["dir"], work["model"]
    other = d / "other"
    other.mkdir(exist_ok=True)
    write_dat(other / "imatrix", {"blk.99.nothing.weight": (np.ones(8, np.float32), 1)}, chunks=0, dataset="")
    cases = [(d / "dat", ["--pure"], "Q4_K"), (d / "dat", ["--pure"], "Q5_1"), (other, [], "Q4_K_M")]
    for cwd, extra, qtype in cases:
        mine, ref = cwd / f"mine-x-{qtype}.gguf", cwd / f"ref-x-{qtype}.gguf"
        pagoda(pagoda_bin, *extra, "--imatrix", "imatrix", model, mine, qtype, "-t", "2", cwd=cwd)
        if llama_quantize is not None:
            llama_quantize(*extra, "--imatrix", "imatrix", model, ref, qtype, cwd=cwd)
            assert mine.read_bytes() == ref.read_bytes(), f"{extra} {qtype}: {first_tensor_difference(mine, ref)}"


def test_imatrix_bad_input(pagoda_bin, work, tmp_path):
    model, entries = work["model"], work["entries"]
    out = tmp_path / "out.gguf"
    good = (work["dir"] / "dat" / "imatrix").read_bytes()

    def bad(content, *expect):
        p = tmp_path / "bad-imatrix"
        p.write_bytes(content)
        r = pagoda(pagoda_bin, "--imatrix", p, model, out, "Q4_K_M", cwd=tmp_path, check=False)
        assert r.returncode == 1, (r.returncode, r.stderr)
        for e in expect:
            assert e in r.stderr, r.stderr
        assert not out.exists()
    bad(good[:1000], "truncated")
    bad(good[:3], "not an imatrix file")
    bad(b"hello, this is not an imatrix\n" * 4, "truncated or not an imatrix file")
    bad(work["model"].read_bytes(), "not an imatrix file: GGUF without imatrix.datasets")
    gg = (work["dir"] / "gguf" / "imatrix").read_bytes()
    bad(gg[: len(gg) // 2], "malformed GGUF imatrix")
    wrong = dict(entries)
    sums, count = wrong["blk.3.ffn_down.weight"]
    wrong["blk.3.ffn_down.weight"] = (np.append(sums, 1.0).astype(np.float32), count)
    p = tmp_path / "wrong.dat"
    write_dat(p, wrong)
    bad(p.read_bytes(), "entry blk.3.ffn_down.weight has 513 weights, the tensor needs 512")
    write_gguf_imatrix(p, wrong)
    bad(p.read_bytes(), "entry blk.3.ffn_down.weight has 513 weights, the tensor needs 512")
    nan = dict(entries)
    nan["blk.0.attn_q.weight"] = (np.full(N_EMBD, np.nan, np.float32), 1)
    write_dat(p, nan)
    bad(p.read_bytes(), "blk.0.attn_q.weight: weight 0 is not finite")
    r = pagoda(pagoda_bin, "--imatrix", tmp_path / "missing", model, out, "Q4_0", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "cannot open imatrix" in r.stderr


def test_imatrix_experts(pagoda_bin, llama_quantize, tmp_path):
    """3-D expert tensors: the imatrix holds ne[0] weights per expert (ne[0] * n_expert in all), each
    expert quantized with its own slice."""
    from test_quantize import write_moe
    model = tmp_path / "moe.gguf"
    write_moe(model, 4, n_layer=2)
    rng = np.random.default_rng(5)
    entries = {}
    for t in gguf.GGUFReader(str(model)).tensors:
        if not t.name.endswith(".weight") or len(t.shape) < 2 or t.name == "token_embd.weight" or "gate_inp" in t.name:
            continue
        n = int(t.shape[0]) * (int(t.shape[2]) if len(t.shape) > 2 else 1)
        count = int(rng.integers(1, 50))
        entries[t.name] = ((rng.uniform(0.01, 3, n) ** 2 * count).astype(np.float32), count)
    write_dat(tmp_path / "imatrix", entries)
    for qtype in ("Q4_K_M", "Q5_0", "Q6_K"):
        mine, ref = tmp_path / f"mine-{qtype}.gguf", tmp_path / f"ref-{qtype}.gguf"
        pagoda(pagoda_bin, "--imatrix", "imatrix", model, mine, qtype, "-t", "2", cwd=tmp_path)
        if llama_quantize is None:
            continue
        llama_quantize("--imatrix", "imatrix", model, ref, qtype, cwd=tmp_path)
        assert mine.read_bytes() == ref.read_bytes(), f"{qtype}: {first_tensor_difference(mine, ref)}"
    # one expert's slice missing: a clear error naming the tensor
    sums, count = entries["blk.0.ffn_up_exps.weight"]
    entries["blk.0.ffn_up_exps.weight"] = (sums[:-256], count)
    write_dat(tmp_path / "imatrix", entries)
    r = pagoda(pagoda_bin, "--imatrix", "imatrix", model, tmp_path / "x.gguf", "Q4_K_M", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "entry blk.0.ffn_up_exps.weight has 768 weights, the tensor needs 1024" in r.stderr, r.stderr
