"""`pagoda quantize HF_DIR OUT TYPE`: a Hugging Face folder converted and quantized in one step.
For every tiny HF fixture and pycoder-tiny: the F32 output runs to transformers' golden logits; its
tensors (names, shapes, data) are those of test_hf_to_gguf.convert (llama.cpp's conventions, the
converter pagoda's GGUF loader is tested against); Q4_K_M and Q8_0 outputs carry the same tensor
bytes as `pagoda quantize` of that converted GGUF (and, with the anchor's llama-quantize, as
llama-quantize's); the tokenizer written into the GGUF tokenizes like the HF folder; bad input gets
one clear error line."""
import json
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import ROOT
from test_hf_to_gguf import convert
from test_quantize import llama_quantize  # noqa: F401 (the fixture)

gguf = pytest.importorskip("gguf")

HF = ["llama", "llama3", "mistral", "qwen2", "qwen3", "starcoder2", "gpt_bigcode", "llama_bf16"]
ALL = HF + ["pycoder-tiny"]


def src_dir(shared, name):
    return shared / "models" / name if name == "pycoder-tiny" else shared / "fixtures" / "hf" / name


def read_safetensors_f32(path):
    """{name: float32 array}, BF16 widened (safetensors.numpy cannot read BF16)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        buf = raw[8 + n + a:8 + n + b]
        if h["dtype"] == "BF16":
            arr = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(buf, {"F32": np.float32, "F16": np.float16}[h["dtype"]]).astype(np.float32)
        out[name] = arr.reshape(h["shape"])
    return out


@pytest.fixture(scope="module")
def converted(shared, tmp_path_factory):
    """test_hf_to_gguf.convert of each folder (BF16 weights widened to F32 first), cached."""
    cache = {}

    def get(name):
        if name not in cache:
            src = src_dir(shared, name)
            if not src.exists():
                pytest.skip(f"{src} not found")
            d = tmp_path_factory.mktemp(name.replace("-", "_"))
            f32 = d / "hf"
            f32.mkdir()
            shutil.copy(src / "config.json", f32 / "config.json")
            save_file(read_safetensors_f32(src / "model.safetensors"), str(f32 / "model.safetensors"))
            out = d / "conv.gguf"
            convert(f32, out, json.loads((src / "config.json").read_text())["model_type"])
            cache[name] = out
        return cache[name]
    return get


@pytest.fixture(scope="module")
def quantized(shared, run_pagoda, tmp_path_factory):
    """`pagoda quantize DIR out.gguf TYPE`, cached per (name, type)."""
    cache = {}

    def get(name, typ):
        if (name, typ) not in cache:
            src = src_dir(shared, name)
            if not src.exists():
                pytest.skip(f"{src} not found")
            out = tmp_path_factory.mktemp("q") / f"{name}-{typ}.gguf"
            r = run_pagoda("quantize", src, out, typ, "-t", "2")
            cache[(name, typ)] = (out, r.stderr)
        return cache[(name, typ)][0]
    return get


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def assert_same_tensors(mine, ref, what):
    a, b = tensors(mine), tensors(ref)
    assert sorted(a) == sorted(b), f"{what}: tensor names differ: {sorted(set(a) ^ set(b))}"
    for name in a:
        x, y = a[name], b[name]
        assert x.tensor_type == y.tensor_type, f"{what}: {name}: {x.tensor_type.name} vs {y.tensor_type.name}"
        assert list(x.shape) == list(y.shape), f"{what}: {name}: shape {list(x.shape)} vs {list(y.shape)}"
        assert x.data.tobytes() == y.data.tobytes(), f"{what}: {name}: data differs"


@pytest.mark.parametrize("name", HF)
def test_f32_logits_match_golden(shared, run_pagoda, quantized, tmp_path, name):
    out = quantized(name, "F32")
    g = load_file(str(src_dir(shared, name) / "golden.safetensors"))
    save_file({"input_ids": g["input_ids"]}, str(tmp_path / "ids.safetensors"))
    run_pagoda("logits", "-m", out, "-i", tmp_path / "ids.safetensors", "-o", tmp_path / "out.safetensors")
    got = load_file(str(tmp_path / "out.safetensors"))["logits"]
    assert got.shape == g["logits"].shape
    if name == "llama_bf16":  # as test_cli.py: the shared golden is bf16 compute; hold to f32 compute
        assert np.abs(got - g["logits"]).max() <= 0.05
        g = load_file(str(ROOT / "tests" / "golden" / "llama_bf16_f32compute.safetensors"))
    assert np.abs(got - g["logits"]).max() <= 1e-4


def test_f32_logits_pycoder_match_hf_folder(shared, run_pagoda, quantized, tmp_path):
    """pycoder-tiny has no golden: the GGUF must give the HF folder's logits."""
    out = quantized("pycoder-tiny", "F32")
    ids = np.random.default_rng(0).integers(0, 8192, size=(2, 40)).astype(np.int32)
    save_file({"input_ids": ids}, str(tmp_path / "ids.safetensors"))
    res = {}
    for tag, m in (("gguf", out), ("hf", src_dir(shared, "pycoder-tiny"))):
        run_pagoda("logits", "-m", m, "-i", tmp_path / "ids.safetensors", "-o", tmp_path / f"{tag}.safetensors")
        res[tag] = load_file(str(tmp_path / f"{tag}.safetensors"))["logits"]
    assert np.abs(res["gguf"] - res["hf"]).max() <= 1e-4


@pytest.mark.parametrize("name", ALL)
def test_f32_tensors_match_converter(quantized, converted, name):
    assert_same_tensors(quantized(name, "F32"), converted(name), f"{name} F32 vs convert()")


@pytest.mark.parametrize("typ", ["Q4_K_M", "Q8_0"])
@pytest.mark.parametrize("name", ALL)
def test_quantized_match_two_step(run_pagoda, quantized, converted, tmp_path, request, name, typ):
    mine = quantized(name, typ)
    two = tmp_path / "two.gguf"
    run_pagoda("quantize", converted(name), two, typ, "-t", "2")
    assert_same_tensors(mine, two, f"{name} {typ} vs pagoda quantize of convert()")
    try:
        lq = request.getfixturevalue("llama_quantize")
    except pytest.skip.Exception:
        return
    ref = tmp_path / "lq.gguf"
    r = lq(converted(name), ref, typ, check=False)
    if r.returncode != 0 and "unknown model architecture" in r.stdout + r.stderr:
        return  # the anchor's llama.cpp (c392e50) predates the architecture (qwen3)
    assert r.returncode == 0, f"llama-quantize failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    assert_same_tensors(mine, ref, f"{name} {typ} vs llama-quantize of convert()")


def test_gguf_metadata(quantized):
    r = gguf.GGUFReader(quantized("pycoder-tiny", "Q8_0"))
    f = r.fields

    def val(k):
        return f[k].contents()
    assert val("general.architecture") == "llama"
    assert val("tokenizer.ggml.model") == "gpt2"
    assert val("tokenizer.ggml.pre") == "gpt-2"
    toks, types = val("tokenizer.ggml.tokens"), val("tokenizer.ggml.token_type")
    assert len(toks) == 8192 and toks[0] == "<|endoftext|>" and types[0] == 3 and types[10] == 1
    assert val("tokenizer.ggml.bos_token_id") == 0 and val("tokenizer.ggml.eos_token_id") == 0
    assert val("tokenizer.ggml.padding_token_id") == 4
    assert val("tokenizer.ggml.add_bos_token") is True and val("tokenizer.ggml.add_eos_token") is False
    assert "<|im_start|>" in val("tokenizer.chat_template")
    assert val("general.file_type") == 7


def test_tokenizer_vocab_matches_tokenizer_json(shared, quantized):
    tj = json.loads((src_dir(shared, "pycoder-tiny") / "tokenizer.json").read_text())
    f = gguf.GGUFReader(quantized("pycoder-tiny", "F32")).fields
    toks = f["tokenizer.ggml.tokens"].contents()
    for piece, i in tj["model"]["vocab"].items():
        assert toks[i] == piece
    merges = f["tokenizer.ggml.merges"].contents()
    assert merges == [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]


TEXTS = ["def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
         "héllo wörld — naïve café 日本語のテキスト 🦙🚀 ½ x²",
         "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
         "<|endoftext|>print('hi')  \t\n\n   x = 3333333"]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_same_as_hf_folder(shared, run_pagoda, quantized, text):
    out = quantized("pycoder-tiny", "Q8_0")
    for extra in ([], ["--no-special"], ["--add-special"]):
        a = run_pagoda("tokenize", "-m", out, "--ids", *extra, text).stdout.split()
        b = run_pagoda("tokenize", "-m", src_dir(shared, "pycoder-tiny"), "--ids", *extra, text).stdout.split()
        assert a == b, (extra, text)


def test_refuses_unrecognised_pre_tokenizer(shared, run_pagoda, tmp_path):
    src = src_dir(shared, "pycoder-tiny")
    d = tmp_path / "m"
    shutil.copytree(src, d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\d{1,5}"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    r = run_pagoda("quantize", d, tmp_path / "o.gguf", "Q8_0", check=False)
    assert r.returncode == 1 and "pre-tokenizer not recognised" in r.stderr
    assert not (tmp_path / "o.gguf").exists() and not list(tmp_path.glob("o.gguf*"))


def test_bad_input(shared, run_pagoda, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_pagoda("quantize", empty, tmp_path / "o.gguf", "Q8_0", check=False)
    assert r.returncode == 1 and "no config.json" in r.stderr, r.stderr

    gptq = shared / "fixtures" / "quant" / "gptq_4bit_g32"
    if gptq.exists():
        r = run_pagoda("quantize", gptq, tmp_path / "o.gguf", "Q8_0", check=False)
        assert r.returncode == 1 and "quantized checkpoint" in r.stderr and "gptq" in r.stderr, r.stderr

    src = src_dir(shared, "llama")
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    shutil.copy(src / "config.json", trunc / "config.json")
    data = (src / "model.safetensors").read_bytes()
    for cut in (len(data) // 2, 20, 4):
        (trunc / "model.safetensors").write_bytes(data[:cut])
        r = run_pagoda("quantize", trunc, tmp_path / "o.gguf", "Q8_0", check=False)
        assert r.returncode == 1 and r.stderr.strip().startswith("pagoda quantize:"), r.stderr
    (trunc / "model.safetensors").unlink()
    r = run_pagoda("quantize", trunc, tmp_path / "o.gguf", "Q8_0", check=False)
    assert r.returncode == 1 and "safetensors" in r.stderr, r.stderr
    assert not list(tmp_path.glob("o.gguf*"))


def test_sharded_f16_folder(shared, run_pagoda, quantized, tmp_path):
    """A sharded checkpoint (model.safetensors.index.json) in F16: the tensors of the unsharded
    F32 run with every weight rounded to F16 (rounding commutes with the row permutation)."""
    src = src_dir(shared, "llama")
    t = read_safetensors_f32(src / "model.safetensors")
    names = sorted(t)
    d = tmp_path / "sharded"
    d.mkdir()
    shutil.copy(src / "config.json", d / "config.json")
    half = len(names) // 2
    wmap = {}
    for k, part in enumerate((names[:half], names[half:])):
        fn = f"model-{k + 1:05d}-of-00002.safetensors"
        save_file({n: t[n].astype(np.float16) for n in part}, str(d / fn))
        wmap.update({n: fn for n in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    out = tmp_path / "o.gguf"
    run_pagoda("quantize", d, out, "F32")
    a, b = tensors(out), tensors(quantized("llama", "F32"))
    assert sorted(a) == sorted(b)
    for name in a:
        want = np.asarray(b[name].data).astype(np.float16).astype(np.float32)
        assert np.array_equal(np.asarray(a[name].data), want), name


BL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
             "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
QWEN2_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
            "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


@pytest.mark.parametrize("pre,ignore_merges,want", [
    ({"type": "Sequence", "pretokenizers": [split(LLAMA3_RE), BL]}, True, "llama-bpe"),
    ({"type": "Sequence", "pretokenizers": [split(LLAMA3_RE), BL]}, False, "dbrx"),
    ({"type": "Sequence", "pretokenizers": [split(QWEN2_RE), BL]}, False, "qwen2"),
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, dict(BL, use_regex=True)]},
     False, "starcoder"),
])
def test_pre_family_detected(shared, run_pagoda, tmp_path, pre, ignore_merges, want):
    """tokenizer.json pre-tokenizers of the common families get their tokenizer.ggml.pre name, and
    the GGUF tokenizes as the folder does."""
    d = tmp_path / "m"
    shutil.copytree(src_dir(shared, "pycoder-tiny"), d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = pre
    tj["model"]["ignore_merges"] = ignore_merges
    (d / "tokenizer.json").write_text(json.dumps(tj))
    out = tmp_path / "o.gguf"
    run_pagoda("quantize", d, out, "Q8_0")
    assert gguf.GGUFReader(out).fields["tokenizer.ggml.pre"].contents() == want
    for text in TEXTS:
        a = run_pagoda("tokenize", "-m", out, "--ids", text).stdout.split()
        assert a == run_pagoda("tokenize", "-m", d, "--ids", text).stdout.split(), text
