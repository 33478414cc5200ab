"""`pagoda synth`: the GGUF it writes is read back with gguf-py (the llama.cpp reference reader):
architecture keys, tensor names/shapes/types, and dequantized weight statistics."""
import os
import subprocess

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

BIN = os.environ.get("PAGODA_BIN")
if not BIN or not os.path.exists(BIN):
    pytest.skip("PAGODA_BIN not set or missing (set by CTest)", allow_module_level=True)

TINY = dict(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=768, n_vocab=1024, n_ctx=512)
TYPES = {
    "f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1,
    "q5_0": Q.Q5_0, "q5_1": Q.Q5_1, "q4_k": Q.Q4_K, "q5_k": Q.Q5_K, "q6_k": Q.Q6_K,
}
FTYPE = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9,
         "q4_k": 14, "q5_k": 16, "q6_k": 18}


def synth(tmp_path, shape, wtype, seed=1):
    out = tmp_path / f"{shape}-{wtype}-{seed}.gguf"
    r = subprocess.run([BIN, "synth", "--shape", shape, "--type", wtype, "--seed", str(seed), "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def field(reader, key):
    f = reader.fields[key]
    v = f.contents()
    return v


def llama_tensors(c):
    e, f, v = c["n_embd"], c["n_ff"], c["n_vocab"]
    ekv = e // c["n_head"] * c["n_head_kv"]
    t = {"token_embd.weight": [e, v], "output_norm.weight": [e], "output.weight": [e, v]}
    for i in range(c["n_layer"]):
        t.update({
            f"blk.{i}.attn_norm.weight": [e], f"blk.{i}.attn_q.weight": [e, e],
            f"blk.{i}.attn_k.weight": [e, ekv], f"blk.{i}.attn_v.weight": [e, ekv],
            f"blk.{i}.attn_output.weight": [e, e], f"blk.{i}.ffn_norm.weight": [e],
            f"blk.{i}.ffn_gate.weight": [e, f], f"blk.{i}.ffn_down.weight": [f, e],
            f"blk.{i}.ffn_up.weight": [e, f],
        })
    return t


def weights_of(t):
    """Dequantized values of a tensor as float64 (ne order reversed, as numpy sees it)."""
    return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64)


@pytest.mark.parametrize("wtype", ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"])
def test_tiny_llama(tmp_path, wtype):
    path = synth(tmp_path, "tiny-llama", wtype)
    r = gguf.GGUFReader(str(path))
    c = TINY
    assert field(r, "general.architecture") == "llama"
    assert field(r, "general.file_type") == FTYPE[wtype]
    assert field(r, "llama.context_length") == c["n_ctx"]
    assert field(r, "llama.embedding_length") == c["n_embd"]
    assert field(r, "llama.block_count") == c["n_layer"]
    assert field(r, "llama.feed_forward_length") == c["n_ff"]
    assert field(r, "llama.attention.head_count") == c["n_head"]
    assert field(r, "llama.attention.head_count_kv") == c["n_head_kv"]
    assert field(r, "llama.rope.dimension_count") == c["n_embd"] // c["n_head"]
    assert field(r, "llama.rope.freq_base") == pytest.approx(10000.0)
    assert field(r, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert field(r, "llama.vocab_size") == c["n_vocab"]
    assert field(r, "tokenizer.ggml.model") == "none"

    want = llama_tensors(c)
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(want)
    for name, t in got.items():
        assert [int(x) for x in t.shape] == want[name], name
        is_norm = name.endswith("norm.weight")
        assert t.tensor_type == (Q.F32 if is_norm else TYPES[wtype]), name
        w = weights_of(t)
        assert w.size == int(np.prod(want[name])), name
        assert np.all(np.isfinite(w)), name
        if is_norm:
            assert abs(w.mean() - 1.0) < 0.01 and 0.01 < w.std() < 0.03, name
        elif w.size >= 65536:  # enough samples for tight bounds
            assert abs(w.mean()) < 0.001, (name, w.mean())
            assert 0.018 < w.std() < 0.022, (name, w.std())
    # rows differ (not one row repeated) and weights are not all equal
    emb = weights_of(got["token_embd.weight"])
    assert emb.shape == (c["n_vocab"], c["n_embd"])
    assert not np.allclose(emb[0], emb[1])


def test_seed(tmp_path):
    a = gguf.GGUFReader(str(synth(tmp_path, "tiny-llama", "q8_0", seed=1)))
    b = gguf.GGUFReader(str(synth(tmp_path, "tiny-llama", "q8_0", seed=1)))
    c = gguf.GGUFReader(str(synth(tmp_path, "tiny-llama", "q8_0", seed=2)))
    ta = {t.name: bytes(t.data) for t in a.tensors}
    assert ta == {t.name: bytes(t.data) for t in b.tensors}  # same seed, same file contents
    tc = {t.name: bytes(t.data) for t in c.tensors}
    assert ta["blk.0.attn_q.weight"] != tc["blk.0.attn_q.weight"]


def test_tiny_starcoder(tmp_path):
    r = gguf.GGUFReader(str(synth(tmp_path, "tiny-starcoder", "q4_0")))
    assert field(r, "general.architecture") == "starcoder"
    assert field(r, "starcoder.attention.head_count_kv") == 1
    assert field(r, "starcoder.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert "starcoder.rope.freq_base" not in r.fields
    e, f, ctx, v = 256, 1024, 512, 1024
    qkv = e + 2 * (e // 4)
    got = {t.name: t for t in r.tensors}
    assert [int(x) for x in got["position_embd.weight"].shape] == [e, ctx]
    assert [int(x) for x in got["token_embd.weight"].shape] == [e, v]
    assert [int(x) for x in got["blk.1.attn_qkv.weight"].shape] == [e, qkv]
    assert [int(x) for x in got["blk.1.attn_qkv.bias"].shape] == [qkv]
    assert [int(x) for x in got["blk.0.ffn_up.weight"].shape] == [e, f]
    assert [int(x) for x in got["blk.0.ffn_up.bias"].shape] == [f]
    assert [int(x) for x in got["blk.0.ffn_down.weight"].shape] == [f, e]
    assert got["blk.0.attn_qkv.weight"].tensor_type == Q.Q4_0
    for name in ("output_norm.bias", "blk.0.attn_norm.bias", "blk.1.ffn_norm.weight", "blk.0.attn_output.bias"):
        assert got[name].tensor_type == Q.F32, name
    b = weights_of(got["blk.0.ffn_up.bias"])
    assert abs(b.mean()) < 0.005 and 0.015 < b.std() < 0.025
    assert len(got) == 2 + 12 * 2 + 3


@pytest.mark.parametrize("args,msg", [
    (["--shape", "no-such-model"], "unknown shape"),
    (["--shape", "tiny-llama", "--type", "q2_k"], "unsupported --type"),
    (["--shape", "tiny-llama", "--type", "nonsense"], "unsupported --type"),
    (["--shape", "tiny-llama", "--seed", "x1"], "--seed"),
    (["--shape", "tiny-llama", "--frobnicate"], "unknown option"),
    (["--shape"], "needs a value"),
])
def test_bad_options(tmp_path, args, msg):
    out = tmp_path / "bad.gguf"
    r = subprocess.run([BIN, "synth", *args, "-o", str(out)] if args != ["--shape"] else [BIN, "synth", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert msg in r.stderr, r.stderr
    assert not out.exists()


def test_missing_output(tmp_path):
    r = subprocess.run([BIN, "synth", "--shape", "tiny-llama"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "-o" in r.stderr


def test_unwritable_path(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "x.gguf"
    r = subprocess.run([BIN, "synth", "--tiny", "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "pagoda synth:" in r.stderr


# ---- --vocab-from: a tokenizer copied from another GGUF ----

def byte_chars():
    """GPT-2's byte-level alphabet: byte b -> a printable unicode char (the standard construction)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


# merges that build "hello" and " world" (byte-level: the space is "Ġ"), highest priority first
WORD_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
SPECIALS = ["<|endoftext|>", "<fim_prefix>"]


def make_vocab(path, n_tokens):
    """A gpt2-style BPE vocab-only GGUF with exactly n_tokens tokens: 256 byte tokens, merged words,
    letter-pair filler merges, and special tokens at the end."""
    tokens = byte_chars()
    merges = list(WORD_MERGES)
    tokens += [m.replace(" ", "") for m in merges]
    have = set(tokens)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    for a in letters:
        for b in letters:
            if len(tokens) + len(SPECIALS) >= n_tokens:
                break
            if a + b not in have:
                merges.append(f"{a} {b}")
                tokens.append(a + b)
                have.add(a + b)
    assert len(tokens) + len(SPECIALS) == n_tokens
    eos = len(tokens)
    tokens += SPECIALS
    types = [1] * (n_tokens - len(SPECIALS)) + [3] * len(SPECIALS)  # NORMAL, CONTROL
    w = gguf.GGUFWriter(str(path), "starcoder")
    w.add_name("vocab source")  # not a tokenizer key: must not be copied
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("starcoder")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores([float(-i) for i in range(n_tokens)])
    w.add_token_merges(merges)
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    w.add_int16("tokenizer.test.i16", -1234)  # other scalar widths survive too
    w.add_float64("tokenizer.test.f64", 0.1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tokens, merges, eos


def tokenizer_fields(r):
    return {k: f for k, f in r.fields.items() if k.startswith("tokenizer.")}


def test_vocab_from(tmp_path):
    src = tmp_path / "vocab.gguf"
    tokens, merges, eos = make_vocab(src, 1024)
    out = tmp_path / "tiny-starcoder-vocab.gguf"
    r = subprocess.run([BIN, "synth", "--shape", "tiny-starcoder", "--type", "q8_0", "--vocab-from", str(src),
                        "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    # (a) every tokenizer.* key comes over with the same type and value, and nothing else does
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(out))
    fa, fb = tokenizer_fields(a), tokenizer_fields(b)
    assert set(fa) == set(fb)
    for k in fa:
        assert fa[k].types == fb[k].types, k
        va, vb = fa[k].contents(), fb[k].contents()
        assert va == vb, k
    assert field(b, "tokenizer.ggml.model") == "gpt2"
    assert field(b, "tokenizer.ggml.pre") == "starcoder"
    assert field(b, "tokenizer.ggml.tokens") == tokens
    assert field(b, "tokenizer.ggml.merges") == merges
    assert field(b, "tokenizer.ggml.bos_token_id") == eos
    assert field(b, "tokenizer.ggml.eos_token_id") == eos
    assert field(b, "tokenizer.ggml.add_bos_token") is False
    assert field(b, "tokenizer.test.i16") == -1234
    assert field(b, "tokenizer.test.f64") == 0.1
    assert fb["tokenizer.test.i16"].types == [gguf.GGUFValueType.INT16]
    assert fb["tokenizer.ggml.scores"].contents()[:3] == [0.0, -1.0, -2.0]
    # the model part is still the synthesized one
    assert field(b, "general.name") == "synthetic tiny-starcoder"
    assert field(b, "general.architecture") == "starcoder"
    assert field(b, "starcoder.vocab_size") == 1024
    got = {t.name: t for t in b.tensors}
    assert [int(x) for x in got["token_embd.weight"].shape] == [256, 1024]

    # (b) pagoda's tokenizer, loaded from the synthesized model, uses the copied vocab and merges
    def tokenize(text, *extra):
        t = subprocess.run([BIN, "tokenize", "-m", str(out), "--ids", *extra, text], capture_output=True,
                           text=True, timeout=60)
        assert t.returncode == 0, t.stderr
        return [int(x) for x in t.stdout.split()]

    assert tokenize("hello world") == [tokens.index("hello"), tokens.index("Ġworld")]
    assert tokenize("<|endoftext|>hello") == [eos, tokens.index("hello")]
    # letters merge by the filler pairs in rank order: "ab" then "c"
    assert tokenize("abc") == [tokens.index("ab"), tokens.index("c")]

    # and the model takes a text prompt end to end (without a tokenizer this fails)
    g = subprocess.run([BIN, "run", "-m", str(out), "-p", "hello world", "-n", "2", "-t", "2"], capture_output=True,
                       text=True, timeout=120)
    assert g.returncode == 0, g.stderr


def test_vocab_from_size_mismatch(tmp_path):
    src = tmp_path / "vocab1000.gguf"
    make_vocab(src, 1000)
    out = tmp_path / "x.gguf"
    r = subprocess.run([BIN, "synth", "--shape", "tiny-starcoder", "--vocab-from", str(src), "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "1000" in r.stderr and "1024" in r.stderr, r.stderr
    assert not out.exists()


def test_vocab_from_bad_source(tmp_path):
    out = tmp_path / "x.gguf"
    for src, msg in [(tmp_path / "missing.gguf", "--vocab-from"), (synth(tmp_path, "tiny-llama", "q8_0"),
                                                                    "tokenizer.ggml.tokens")]:
        r = subprocess.run([BIN, "synth", "--shape", "tiny-starcoder", "--vocab-from", str(src), "-o", str(out)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and msg in r.stderr, r.stderr
        assert not out.exists()
