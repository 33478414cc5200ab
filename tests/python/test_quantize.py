"""`pagoda quantize` against llama-quantize from the anchor llama.cpp build: the two output files
must be byte-identical (metadata, tensor order, quantized data, padding).

With --pure, for every type pagoda writes, on the tiny F32 fixture and on an F16 `pagoda synth`
model with Llama 2's tokenizer whose ffn_down rows (672) are not a multiple of 256. llama-quantize
--pure aborts on K-quant rows that are not a multiple of 256; pagoda takes the fallback llama-quantize
uses without --pure (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0).

Without --pure (llama.cpp's mixtures: Q6_K output, more bits for some layers' attn_v / ffn_down),
for every mixture pagoda writes, on the F32 fixture, its tied-embedding twin (token_embd.weight
takes output.weight's rule), a 10-layer GQA synth model (layer-dependent rules) and the synth model
above (mixture types meeting the row-length fallback)."""
import os
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from safetensors.numpy import load_file, save_file  # noqa: E402

ANCHOR = "anchors/llama.cpp-c392e50-cpu-native.tar.xz"
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
K_TYPES = {"Q4_K", "Q5_K", "Q6_K"}
MIXTURES = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


@pytest.fixture(scope="module")
def llama_quantize(shared, tmp_path_factory):
    tar = shared / ANCHOR
    if not tar.exists():
        pytest.skip(f"{tar} not found: no llama-quantize to compare with")
    d = tmp_path_factory.mktemp("llama")
    with tarfile.open(tar) as t:
        t.extractall(d, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(d)
    exe = next(p for p in d.rglob("llama-quantize") if p.is_file())
    exe.chmod(0o755)

    def run(*args, check=True):
        env = dict(os.environ, LD_LIBRARY_PATH=str(exe.parent))
        r = subprocess.run([str(exe), *map(str, args), "2"], capture_output=True, text=True, env=env, timeout=300)
        if check:
            assert r.returncode == 0, f"llama-quantize {args} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        return r
    return run


@pytest.fixture(scope="module")
def inputs(shared, run_pagoda, tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    f32 = shared / "fixtures" / "gguf" / "tiny-llama-f32.gguf"
    tied = shared / "fixtures" / "gguf" / "tiny-llama-tied-f32.gguf"
    vocab = shared / "fixtures" / "tokenizers" / "ggml-vocab-llama-spm.gguf"
    for p in (f32, tied, vocab):
        if not p.exists():
            pytest.skip(f"{p} not found")
    synth = d / "synth-f16.gguf"
    run_pagoda("synth", "--shape", "tiny-llama-32k", "--type", "f16", "--vocab-from", vocab, "-o", synth,
               "--threads", "2")
    deep = d / "deep-f16.gguf"
    run_pagoda("synth", "--shape", "tiny-llama-deep", "--type", "f16", "-o", deep, "--threads", "2")
    return {"f32": f32, "tied": tied, "synth": synth, "deep": deep}


def first_difference(a, b):
    """Where two GGUF files first differ: the tensor (or the header) and the byte offset."""
    da, db = a.read_bytes(), b.read_bytes()
    n = min(len(da), len(db))
    off = next((i for i in range(n) if da[i] != db[i]), n)
    if off == n and len(da) == len(db):
        return None
    where = "header/metadata"
    try:
        r = gguf.GGUFReader(a)
        for t in r.tensors:
            if t.data_offset <= off < t.data_offset + t.n_bytes:
                where = f"tensor {t.name} ({t.tensor_type.name}) at byte {off - t.data_offset} of its data"
    except Exception as e:  # a broken file: the offset alone
        where = f"unreadable ({e})"
    return f"first difference at file offset {off} ({where}); sizes {len(da)} vs {len(db)}"


def first_tensor_difference(mine, ref):
    """The first tensor (in file order) whose name, type, shape or data differ, with both types."""
    a, b = gguf.GGUFReader(mine).tensors, gguf.GGUFReader(ref).tensors
    for x, y in zip(a, b):
        if x.name != y.name:
            return f"tensor order: {x.name} vs {y.name}"
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape) or x.data.tobytes() != y.data.tobytes():
            shape = [int(v) for v in x.shape], [int(v) for v in y.shape]
            return f"tensor {x.name}: pagoda {x.tensor_type.name} {shape[0]}, llama-quantize {y.tensor_type.name} {shape[1]}"
    return None if len(a) == len(b) else f"{len(a)} vs {len(b)} tensors"


def assert_identical(mine, ref):
    diff = first_difference(mine, ref)
    if diff is not None:
        try:
            diff = f"{first_tensor_difference(mine, ref) or 'tensors equal'}; {diff}"
        except Exception:
            pass
    assert diff is None, f"{mine.name} differs from llama-quantize's {ref.name}: {diff}"


def test_f32_fixture_all_types(run_pagoda, llama_quantize, inputs, tmp_path):
    for t in TYPES:
        ref, mine = tmp_path / f"ref-{t}.gguf", tmp_path / f"mine-{t}.gguf"
        llama_quantize("--pure", inputs["f32"], ref, t)
        run_pagoda("quantize", "--pure", inputs["f32"], mine, t, "-t", "2")
        assert_identical(mine, ref)


def test_synth_f16_all_types(run_pagoda, llama_quantize, inputs, tmp_path):
    src = inputs["synth"]
    for t in TYPES:
        mine = tmp_path / f"mine-{t}.gguf"
        r = run_pagoda("quantize", "--pure", src, mine, t, "-t", "2")
        if t not in K_TYPES:
            ref = tmp_path / f"ref-{t}.gguf"
            llama_quantize("--pure", src, ref, t)
            assert_identical(mine, ref)
            continue
        assert "blk.0.ffn_down.weight: rows of 672 are not a multiple of 256" in r.stderr, r.stderr
        fb = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}[t]
        got = {x.name: x for x in gguf.GGUFReader(mine).tensors}
        assert got["blk.1.ffn_down.weight"].tensor_type.name == fb
        assert got["blk.1.ffn_up.weight"].tensor_type.name == t
        assert got["output.weight"].tensor_type.name == t  # --pure: no Q6_K output


@pytest.mark.parametrize("which", ["f32", "tied", "deep", "synth"])
def test_mixtures(run_pagoda, llama_quantize, inputs, tmp_path, which):
    """llama-quantize without --pure: each mixture byte for byte."""
    src = inputs[which]
    for t in MIXTURES:
        ref, mine = tmp_path / f"ref-{t}.gguf", tmp_path / f"mine-{t}.gguf"
        llama_quantize(src, ref, t)
        run_pagoda("quantize", src, mine, t, "-t", "2")
        assert_identical(mine, ref)
    # the rules show: Q6_K output (token_embd when tied), Q4_K_M's layer pattern on 10 layers
    got = {x.name: x.tensor_type.name for x in gguf.GGUFReader(tmp_path / "mine-Q4_0.gguf").tensors}
    assert got["token_embd.weight" if which == "tied" else "output.weight"] == "Q6_K"
    if which == "deep":
        got = {x.name: x.tensor_type.name for x in gguf.GGUFReader(tmp_path / "mine-Q4_K_M.gguf").tensors}
        assert [i for i in range(10) if got[f"blk.{i}.attn_v.weight"] == "Q6_K"] == [0, 3, 6, 8, 9]
        assert [i for i in range(10) if got[f"blk.{i}.ffn_down.weight"] == "Q6_K"] == [0, 3, 6, 8, 9]


def test_mixture_options(run_pagoda, llama_quantize, inputs, tmp_path):
    """The options next to a mixture: --output-tensor-type also sets a tied token_embd.weight,
    --token-embedding-type overrides after the mixture, --leave-output-tensor copies output.weight."""
    for args in (["--output-tensor-type", "q8_0", inputs["tied"], "Q4_K_M"],
                 ["--token-embedding-type", "q8_0", inputs["tied"], "Q4_0"],
                 ["--output-tensor-type", "q5_k", "--token-embedding-type", "q4_k", inputs["tied"], "Q8_0"],
                 ["--leave-output-tensor", inputs["f32"], "Q4_0"],
                 ["--output-tensor-type", "q4_0", inputs["f32"], "Q5_K_S"]):
        ref, mine = tmp_path / "ref.gguf", tmp_path / "mine.gguf"
        llama_quantize(*args[:-1], ref, args[-1])
        run_pagoda("quantize", *args[:-1], mine, args[-1], "-t", "2")
        assert_identical(mine, ref)


def write_moe(path, n_expert, n_layer=8, n_embd=256, n_ff=256, n_vocab=256):
    """A llama-shaped MoE GGUF (F16 experts) with random weights."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(8)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(n_embd // 8)
    w.add_vocab_size(n_vocab)
    w.add_expert_count(n_expert)
    w.add_expert_used_count(2)
    rng = np.random.default_rng(0)

    def t(name, *shape, dtype=np.float16):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(dtype))
    t("token_embd.weight", n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    t("output.weight", n_vocab, n_embd)
    kv = 2 * n_embd // 8
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, np.float32))
        t(p + "attn_q.weight", n_embd, n_embd)
        t(p + "attn_k.weight", kv, n_embd)
        t(p + "attn_v.weight", kv, n_embd)
        t(p + "attn_output.weight", n_embd, n_embd)
        t(p + "ffn_gate_inp.weight", n_expert, n_embd, dtype=np.float32)
        t(p + "ffn_gate_exps.weight", n_expert, n_ff, n_embd)
        t(p + "ffn_up_exps.weight", n_expert, n_ff, n_embd)
        t(p + "ffn_down_exps.weight", n_expert, n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_mixtures_moe(run_pagoda, llama_quantize, tmp_path):
    """8 experts: Q8_0 attn_v / attn_k, Q5_K attn_output (Q4_K_*); ffn_down_exps by layer number."""
    src = tmp_path / "moe8.gguf"
    write_moe(src, 8)
    for t in ("Q4_K_M", "Q4_K_S", "Q5_0"):
        ref, mine = tmp_path / f"ref-{t}.gguf", tmp_path / f"mine-{t}.gguf"
        llama_quantize(src, ref, t)
        run_pagoda("quantize", src, mine, t, "-t", "2")
        assert_identical(mine, ref)
    got = {x.name: x.tensor_type.name for x in gguf.GGUFReader(tmp_path / "mine-Q4_K_M.gguf").tensors}
    assert (got["blk.1.attn_v.weight"], got["blk.1.attn_output.weight"]) == ("Q8_0", "Q5_K")


def test_quantized_logits_sane(run_pagoda, inputs, shared, tmp_path):
    """The Q4_0 file runs in pagoda and its logits match llama.cpp's on the same Q4_0 weights (the
    fixture tiny-llama-q4_0 was made by llama-quantize --pure from tiny-llama-f32), within the
    bound test_golden uses, and stay near the F32 model's."""
    gold_dir = shared / "fixtures" / "gguf"
    q4 = tmp_path / "q4_0.gguf"
    run_pagoda("quantize", "--pure", inputs["f32"], q4, "Q4_0")
    f32_gold = load_file(str(gold_dir / "tiny-llama-f32.golden.safetensors"))
    q4_gold = load_file(str(gold_dir / "tiny-llama-q4_0.golden.safetensors"))
    save_file({"input_ids": f32_gold["input_ids"]}, str(tmp_path / "ids.safetensors"))
    out = tmp_path / "logits.safetensors"
    run_pagoda("logits", "-m", q4, "-i", tmp_path / "ids.safetensors", "-o", out, "-t", "2")
    got = load_file(str(out))["logits"]
    d = np.abs(got - q4_gold["logits"])
    assert d.max() <= 0.25 and d.mean() <= 1e-2, f"vs llama.cpp q4_0 logits: max {d.max()} mean {d.mean()}"
    d32 = np.abs(got - f32_gold["logits"])
    assert d32.mean() < 1.0 and d32.max() < 6.0, f"vs f32 logits: max {d32.max()} mean {d32.mean()}"
    # the synth model with its tokenizer loads after quantization, too
    q6 = tmp_path / "synth-q6_k.gguf"
    run_pagoda("quantize", inputs["synth"], q6, "Q6_K")
    r = run_pagoda("tokenize", "-m", q6, "--ids", "Hello world")
    assert r.stdout.strip()


def test_errors(run_pagoda, inputs, tmp_path):
    out = tmp_path / "out.gguf"
    r = run_pagoda("quantize", inputs["f32"], out, "Q3_K_M", check=False)
    assert r.returncode == 2 and "Q3_K_M needs tensors in Q3_K" in r.stderr, r.stderr
    r = run_pagoda("quantize", inputs["f32"], out, "IQ4_XS", check=False)
    assert r.returncode == 2 and "needs tensors in IQ4_XS" in r.stderr, r.stderr
    r = run_pagoda("quantize", inputs["f32"], out, "Q9_X", check=False)
    assert r.returncode == 2 and "unknown TYPE 'Q9_X'" in r.stderr, r.stderr
    assert not out.exists()
    r = run_pagoda("quantize", inputs["f32"], out, check=False)
    assert r.returncode == 2
    notgguf = tmp_path / "not.gguf"
    notgguf.write_bytes(b"hello, this is not a model" * 10)
    r = run_pagoda("quantize", notgguf, out, "Q4_0", check=False)
    assert r.returncode == 1 and "pagoda quantize:" in r.stderr
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(inputs["f32"].read_bytes()[:100000])
    r = run_pagoda("quantize", trunc, out, "Q4_0", check=False)
    assert r.returncode == 1 and "pagoda quantize:" in r.stderr
    r = run_pagoda("quantize", inputs["f32"], tmp_path / "no-such-dir" / "x.gguf", "Q4_0", check=False)
    assert r.returncode == 1 and "cannot create" in r.stderr
    q8 = tmp_path / "q8.gguf"
    run_pagoda("quantize", inputs["f32"], q8, "Q8_0")
    r = run_pagoda("quantize", q8, out, "Q4_0", check=False)
    assert r.returncode == 1 and "--allow-requantize" in r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "a temp file was left behind"
    run_pagoda("quantize", "--allow-requantize", q8, out, "Q4_0")
    same = tmp_path / "same.gguf"
    run_pagoda("quantize", q8, same, "Q8_0")  # already the target type: copied
    assert gguf.GGUFReader(same).tensors[0].data.tobytes() == gguf.GGUFReader(q8).tensors[0].data.tobytes()
