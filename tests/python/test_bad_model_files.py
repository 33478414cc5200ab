"""Model files that used to load silently or hang: each must give one clear error naming what is
wrong and a non-zero exit, within seconds, from `pagoda info`, `pagoda run` and `pagoda serve`.

- a FIFO (or other non-regular file) under any name pagoda opens from a model folder or as a GGUF;
- hyperparameters that make the model compute nothing (rope base, norm epsilon, head counts ...);
- NaN/Inf weights (float tensors, and the scales of quantized blocks), and a run-time NaN in the
  logits ending the request with an error;
- malformed tokenizer metadata that `pagoda info` used to show and exit 0 on.

Fixtures are the small shared ones, copied (or linked) into a temporary folder and broken there."""
import json
import math
import os
import shutil
import socket
import struct
import subprocess

import numpy as np
import pytest

TIMEOUT = 60  # generous for a loaded CI machine; a hang shows as TimeoutExpired, not a stuck run


# ---- a GGUF reader/writer that keeps everything it does not change byte for byte ----

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
T_STRING, T_ARRAY = 8, 9


class Gguf:
    def __init__(self, path):
        b = open(path, "rb").read()
        assert b[:4] == b"GGUF"
        self.version, n_t, n_kv = struct.unpack_from("<IQQ", b, 4)
        o = 24
        self.kvs = []  # [key, type, raw value bytes]
        for _ in range(n_kv):
            key, o = self._str(b, o)
            (t,) = struct.unpack_from("<I", b, o)
            start = o + 4
            o = self._skip(b, start, t)
            self.kvs.append([key, t, b[start:o]])
        self.tensors = []  # [name, ne, type, offset]
        for _ in range(n_t):
            name, o = self._str(b, o)
            (nd,) = struct.unpack_from("<I", b, o)
            ne = list(struct.unpack_from(f"<{nd}q", b, o + 4))
            t, off = struct.unpack_from("<Iq", b, o + 4 + 8 * nd)
            o += 4 + 8 * nd + 12
            self.tensors.append([name, ne, t, off])
        self.alignment = 32
        for k, t, raw in self.kvs:
            if k == "general.alignment":
                self.alignment = struct.unpack("<I", raw)[0]
        o += (-o) % self.alignment
        self.data = bytearray(b[o:])

    @staticmethod
    def _str(b, o):
        (n,) = struct.unpack_from("<Q", b, o)
        return b[o + 8:o + 8 + n].decode("utf-8", "replace"), o + 8 + n

    @classmethod
    def _skip(cls, b, o, t):
        if t in SCALAR:
            return o + struct.calcsize(SCALAR[t])
        if t == T_STRING:
            return o + 8 + struct.unpack_from("<Q", b, o)[0]
        at, n = struct.unpack_from("<IQ", b, o)
        o += 12
        if at in SCALAR:
            return o + n * struct.calcsize(SCALAR[at])
        for _ in range(n):
            o = cls._skip(b, o, at)
        return o

    def set(self, key, t, value, arr_type=None):
        """Sets (or adds) a key: a scalar of type t, a string, or an array of arr_type."""
        if t in SCALAR:
            raw = struct.pack(SCALAR[t], value)
        elif t == T_STRING:
            raw = enc_str(value)
        else:
            raw = struct.pack("<IQ", arr_type, len(value))
            raw += b"".join(enc_str(v) if arr_type == T_STRING else struct.pack(SCALAR[arr_type], v) for v in value)
        for kv in self.kvs:
            if kv[0] == key:
                kv[1], kv[2] = t, raw
                return self
        self.kvs.append([key, t, raw])
        return self

    def tensor(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def write(self, path):
        out = b"GGUF" + struct.pack("<IQQ", self.version, len(self.tensors), len(self.kvs))
        for k, t, raw in self.kvs:
            out += enc_str(k) + struct.pack("<I", t) + raw
        for name, ne, t, off in self.tensors:
            out += enc_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<q", n) for n in ne)
            out += struct.pack("<Iq", t, off)
        out += b"\0" * ((-len(out)) % self.alignment)
        open(path, "wb").write(out + bytes(self.data))
        return path


def enc_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def run(pagoda_bin, *args):
    return subprocess.run([pagoda_bin, *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT)


def assert_refused(pagoda_bin, model, *fragments, commands=("info", "run")):
    """Every command exits non-zero (not by a signal) with one error line holding all fragments."""
    for cmd in commands:
        args = ["info", "-m", model] if cmd == "info" else ["run", "-m", model, "--prompt-ids", "1,2", "-n", "2"]
        r = run(pagoda_bin, *args)
        assert r.returncode > 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr}"
        errors = [l for l in r.stderr.splitlines() if l.strip() and "has no tokenizer" not in l]
        assert len(errors) == 1, f"{cmd}: {r.stderr}"
        for f in fragments:
            assert f.lower() in errors[0].lower(), f"{cmd}: {f!r} not in {errors[0]!r}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_serve_refuses(pagoda_bin, model, fragment):
    r = subprocess.run([pagoda_bin, "serve", "-m", str(model), "--host", "127.0.0.1", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode > 0, r.stderr
    assert fragment.lower() in r.stderr.lower(), r.stderr


def hf_copy(src, dst, replace=()):
    """A model folder whose files link to src's, except the names in replace (left out)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name not in replace:
            os.symlink(f, dst / f.name)
    return dst


# ---- 1. non-regular files ----

@pytest.fixture
def pycoder(shared):
    p = shared / "models" / "pycoder-tiny"
    if not (p / "tokenizer.json").exists():
        pytest.skip("pycoder-tiny not in ../shared")
    return p


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                  "model.safetensors.index.json"])
def test_fifo_in_model_folder(pagoda_bin, pycoder, tmp_path, name):
    d = hf_copy(pycoder, tmp_path / "m", replace=(name,))
    os.mkfifo(d / name)
    assert_refused(pagoda_bin, d, name, "not a regular file")
    if name == "config.json":
        assert_serve_refuses(pagoda_bin, d, "not a regular file")


def test_fifo_shard_named_by_index(pagoda_bin, pycoder, tmp_path):
    d = hf_copy(pycoder, tmp_path / "m", replace=("model.safetensors",))
    header = _st_header(pycoder / "model.safetensors")
    names = [k for k in header if k != "__metadata__"]
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: "shard-1.safetensors" for n in names}}))
    os.mkfifo(d / "shard-1.safetensors")
    assert_refused(pagoda_bin, d, "shard-1.safetensors", "not a regular file")


def test_fifo_and_device_as_gguf(pagoda_bin, tmp_path):
    f = tmp_path / "model.gguf"
    os.mkfifo(f)
    assert_refused(pagoda_bin, f, "model.gguf", "not a regular file")
    assert_serve_refuses(pagoda_bin, f, "not a regular file")
    # a character device never ends: refused the same way rather than read forever
    assert_refused(pagoda_bin, "/dev/zero", "/dev/zero", "not a regular file")


def _st_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


# ---- 2. hyperparameters that make the model compute nothing ----

HF_BAD = [
    ({"rope_parameters": {"rope_theta": 0.0, "rope_type": "default"}}, "rope_theta"),
    ({"rope_parameters": {"rope_theta": -10000.0, "rope_type": "default"}}, "rope_theta"),
    ({"rope_parameters": {"rope_theta": 1e39, "rope_type": "default"}}, "rope_theta"),  # inf as a float
    ({"rms_norm_eps": 0.0}, "rms_norm_eps"),
    ({"rms_norm_eps": -1e-5}, "rms_norm_eps"),
    ({"num_attention_heads": 0}, "num_attention_heads"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"num_key_value_heads": -2}, "num_key_value_heads"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"intermediate_size": -1}, "intermediate_size"),
    ({"max_position_embeddings": -5}, "max_position_embeddings"),
    ({"sliding_window": -1}, "sliding_window"),
    ({"rope_parameters": {"rope_theta": 10000.0, "rope_type": "linear", "factor": 1e39}}, "factor"),
    ({"rope_parameters": {"rope_theta": "10000", "rope_type": "default"}}, "rope_theta"),
    ({"num_attention_heads": 4.5}, "num_attention_heads"),
    ({"num_key_value_heads": "2"}, "num_key_value_heads"),
    ({"max_position_embeddings": 1 << 40}, "max_position_embeddings"),
]


@pytest.mark.parametrize("change,field", HF_BAD, ids=[f"{f}={list(c.values())[0]}" for c, f in HF_BAD])
def test_hf_config_refused(pagoda_bin, shared, tmp_path, change, field):
    src = shared / "fixtures" / "hf" / "llama"
    d = hf_copy(src, tmp_path / "m", replace=("config.json",))
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(change)
    (d / "config.json").write_text(json.dumps(cfg))
    assert_refused(pagoda_bin, d, "config.json", field)


def test_hf_head_dim_not_dividing(pagoda_bin, shared, tmp_path):
    src = shared / "fixtures" / "hf" / "llama"
    d = hf_copy(src, tmp_path / "m", replace=("config.json",))
    cfg = json.loads((src / "config.json").read_text())
    del cfg["head_dim"]
    cfg["num_attention_heads"], cfg["num_key_value_heads"] = 6, 6  # 64 / 6
    (d / "config.json").write_text(json.dumps(cfg))
    assert_refused(pagoda_bin, d, "config.json")


GGUF_BAD = [
    ("llama.rope.freq_base", 6, float("nan")),
    ("llama.rope.freq_base", 6, float("inf")),
    ("llama.rope.freq_base", 6, 0.0),
    ("llama.rope.freq_base", 6, -1.0),
    ("llama.attention.layer_norm_rms_epsilon", 6, float("nan")),
    ("llama.attention.layer_norm_rms_epsilon", 6, 0.0),
    ("llama.attention.layer_norm_rms_epsilon", 6, float("-inf")),
    ("llama.attention.head_count", 4, 0),
    ("llama.attention.head_count_kv", 4, 3),
    ("llama.block_count", 4, 0),
    ("llama.embedding_length", 4, 0),
    ("llama.feed_forward_length", 4, 0),
    ("llama.rope.dimension_count", 5, -2),
    ("llama.context_length", 5, -1),
    # present but not a number in range: used to read as missing and take the default
    ("llama.rope.freq_base", T_STRING, "10000"),
    ("llama.attention.head_count_kv", 10, 1 << 40),
    ("llama.context_length", 10, 1 << 40),
    ("llama.attention.layer_norm_rms_epsilon", 4, 1),
]


@pytest.mark.parametrize("key,t,value", GGUF_BAD, ids=[f"{k}={v}" for k, _, v in GGUF_BAD])
def test_gguf_metadata_refused(pagoda_bin, shared, tmp_path, key, t, value):
    g = Gguf(shared / "fixtures" / "gguf" / "tiny-llama-f32.gguf")
    g.set(key, t, value)
    p = g.write(tmp_path / "bad.gguf")
    assert_refused(pagoda_bin, p, key.split(".", 1)[1])


def test_gguf_fixture_roundtrip_still_loads(pagoda_bin, shared, tmp_path):
    """The rewriter itself changes nothing: a file it writes unchanged loads and runs."""
    g = Gguf(shared / "fixtures" / "gguf" / "tiny-llama-q4_k.gguf")
    p = g.write(tmp_path / "same.gguf")
    r = run(pagoda_bin, "info", "-m", p)
    assert r.returncode == 0 and "loads:          ok" in r.stdout, r.stderr


# ---- 3. NaN / Inf weights ----

NAN16, INF16, NAN32 = 0x7E00, 0x7C00, 0x7FC00000
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_K = 0, 1, 2, 12


@pytest.mark.parametrize("fixture,tensor,poke", [
    ("f32", "blk.1.attn_v.weight", ("<I", 4 * 777, NAN32)),
    ("f32", "output_norm.weight", ("<f", 4 * 3, float("inf"))),
    ("f16", "blk.0.ffn_up.weight", ("<H", 2 * 12345, INF16)),
    ("q4_0", "blk.0.attn_q.weight", ("<H", 18 * 100, NAN16)),      # block 100's d
    ("q4_k", "blk.1.ffn_gate.weight", ("<H", 144 * 7 + 2, NAN16)),  # block 7's dmin
    ("tied-f32", "token_embd.weight", ("<I", 4 * 5, NAN32)),
])
def test_gguf_nonfinite_weights_refused(pagoda_bin, shared, tmp_path, fixture, tensor, poke):
    g = Gguf(shared / "fixtures" / "gguf" / f"tiny-llama-{fixture}.gguf")
    fmt, at, value = poke
    struct.pack_into(fmt, g.data, g.tensor(tensor)[3] + at, value)
    p = g.write(tmp_path / "nan.gguf")
    assert_refused(pagoda_bin, p, tensor, "nan or infinite")
    assert_serve_refuses(pagoda_bin, p, tensor)


@pytest.mark.parametrize("model,tensor", [("llama", "model.layers.1.mlp.down_proj.weight"),
                                          ("llama_bf16", "model.layers.0.self_attn.q_proj.weight"),
                                          ("llama_bf16", "model.norm.weight")])
def test_hf_nonfinite_weights_refused(pagoda_bin, shared, tmp_path, model, tensor):
    src = shared / "fixtures" / "hf" / model
    d = hf_copy(src, tmp_path / "m", replace=("model.safetensors",))
    blob = bytearray((src / "model.safetensors").read_bytes())
    (n,) = struct.unpack_from("<Q", blob, 0)
    info = json.loads(blob[8:8 + n])[tensor]
    at = 8 + n + info["data_offsets"][0] + 2 * 7 * (2 if info["dtype"] == "F32" else 1)
    if info["dtype"] == "F32":
        struct.pack_into("<f", blob, at, float("nan"))
    else:
        assert info["dtype"] == "BF16"
        struct.pack_into("<H", blob, at, 0xFF80)  # -inf
    (d / "model.safetensors").write_bytes(blob)
    assert_refused(pagoda_bin, d, tensor, "nan or infinite")


def overflowing_model(shared, tmp_path):
    """Finite weights whose products overflow: the load scan passes them, the logits are NaN/Inf."""
    g = Gguf(shared / "fixtures" / "gguf" / "tiny-llama-f32.gguf")
    name, ne, t, off = g.tensor("output.weight")
    assert t == GGML_F32
    n = ne[0] * ne[1]
    big = np.full(n, 3e38, dtype="<f4")
    big[1::2] = -3e38
    g.data[off:off + 4 * n] = big.tobytes()
    return g.write(tmp_path / "overflow.gguf")


def test_finite_but_overflowing_weights_end_the_request(pagoda_bin, shared, tmp_path):
    """The run ends with an error instead of printing tokens drawn from garbage."""
    p = overflowing_model(shared, tmp_path)
    r = run(pagoda_bin, "run", "-m", p, "--prompt-ids", "1,2,3", "-n", "4", "--ignore-eos")
    assert r.returncode > 0, r.stdout
    assert "nan or infinite logits" in r.stderr.lower(), r.stderr
    assert r.stdout.strip() == "", r.stdout


# ---- 4. tokenizer metadata `pagoda info` must validate ----

def vocab_file(shared, tmp_path, name, edit):
    g = Gguf(shared / "fixtures" / "tokenizers" / f"ggml-vocab-{name}.gguf")
    edit(g)
    return g.write(tmp_path / f"{name}-bad.gguf")


def _raw(g, key):
    return next(kv for kv in g.kvs if kv[0] == key)


TOK_BAD = {
    # tokens as an array of int32 instead of strings
    "tokens_int32": ("llama-spm", lambda g: g.set("tokenizer.ggml.tokens", T_ARRAY, list(range(32000)), 5),
                     "tokenizer.ggml.tokens"),
    # scores as strings
    "scores_strings": ("llama-spm", lambda g: g.set("tokenizer.ggml.scores", T_ARRAY, ["x"] * 32000, T_STRING),
                       "tokenizer.ggml.scores"),
    # scores of the wrong length
    "scores_short": ("llama-spm", lambda g: g.set("tokenizer.ggml.scores", T_ARRAY, [0.0] * 10, 6),
                     "tokenizer.ggml.scores"),
    # token types as floats
    "token_type_f32": ("gpt-2", lambda g: g.set("tokenizer.ggml.token_type", T_ARRAY, [1.0] * 50257, 6),
                       "tokenizer.ggml.token_type"),
    # merges as integers
    "merges_int": ("gpt-2", lambda g: g.set("tokenizer.ggml.merges", T_ARRAY, [1, 2, 3], 5), "tokenizer.ggml.merges"),
    # merges without a space
    "merge_no_space": ("gpt-2", lambda g: g.set("tokenizer.ggml.merges", T_ARRAY, ["ab"], T_STRING), "merge"),
    # a tokens key that is a string, not an array
    "tokens_scalar": ("gpt-2", lambda g: g.set("tokenizer.ggml.tokens", T_STRING, "hello"), "tokenizer.ggml.tokens"),
    # an unknown tokenizer kind
    "model_unknown": ("gpt-2", lambda g: g.set("tokenizer.ggml.model", T_STRING, "wordpiece9"), "wordpiece9"),
}


@pytest.mark.parametrize("case", sorted(TOK_BAD))
def test_info_validates_vocab_only_files(pagoda_bin, shared, tmp_path, case):
    name, edit, fragment = TOK_BAD[case]
    p = vocab_file(shared, tmp_path, name, edit)
    assert_refused(pagoda_bin, p, fragment, commands=("info",))


def test_info_validates_model_tokenizer(pagoda_bin, shared, tmp_path):
    g = Gguf(shared / "fixtures" / "gguf" / "tiny-llama-f32.gguf")
    g.set("tokenizer.ggml.model", T_STRING, "llama")
    g.set("tokenizer.ggml.tokens", T_ARRAY, list(range(512)), 5)  # int32, not strings
    assert_refused(pagoda_bin, g.write(tmp_path / "a.gguf"), "tokenizer.ggml.tokens")


def test_none_tokenizer_with_huge_vocabulary(pagoda_bin, shared, tmp_path):
    g = Gguf(shared / "fixtures" / "gguf" / "tiny-llama-f32.gguf")
    assert bytes(_raw(g, "tokenizer.ggml.model")[2]) == enc_str("none")
    g.set("tokenizer.ggml.tokens", T_ARRAY, [f"t{i}" for i in range(100000)], T_STRING)
    assert_refused(pagoda_bin, g.write(tmp_path / "a.gguf"), "tokenizer.ggml.tokens", "512")


def test_info_still_accepts_good_vocab_files(pagoda_bin, shared):
    for f in sorted((shared / "fixtures" / "tokenizers").glob("*.gguf")):
        r = run(pagoda_bin, "info", "-m", f)
        assert r.returncode == 0 and "vocabulary:     ok" in r.stdout, (f, r.stderr)


def test_info_builtin_model_checks_tokenizer(pagoda_bin, builtin_model):
    r = run(pagoda_bin, "info", "-m", builtin_model)
    assert r.returncode == 0 and "loads:          ok" in r.stdout, r.stderr


def test_serve_nan_logits_request_errors(pagoda_bin, shared, tmp_path):
    """Through the server: a plain request gets a 500 naming the cause, a streamed one an error
    event and finish_reason "error"; the server stays up for the next request."""
    from serve_harness import Server
    s = Server(pagoda_bin, overflowing_model(shared, tmp_path))
    try:
        for _ in range(2):
            status, _, body = s.post("/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 4})
            assert status == 500 and b"NaN or infinite logits" in body, (status, body)
        status, _, body = s.post("/v1/completions", {"prompt": [1, 2, 3], "max_tokens": 4, "stream": True})
        assert status == 200 and b"NaN or infinite logits" in body and b'"finish_reason":"error"' in body, body
        status, _, _ = s.get("/health")
        assert status == 200
        assert s.stop() == 0, s.text()
    finally:
        s.close()


def test_info_validates_tokenizer_of_unsupported_hf_family(pagoda_bin, pycoder, tmp_path):
    """A Hugging Face family pagoda does not run is shown, but its tokenizer must still load."""
    d = hf_copy(pycoder, tmp_path / "m", replace=("config.json", "tokenizer.json"))
    cfg = json.loads((pycoder / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (d / "config.json").write_text(json.dumps(cfg))
    os.symlink(pycoder / "tokenizer.json", d / "tokenizer.json")
    r = run(pagoda_bin, "info", "-m", d)
    assert r.returncode == 0 and "runnable:       no" in r.stdout and "vocabulary:     ok" in r.stdout, r.stderr
    os.unlink(d / "tokenizer.json")
    tok = json.loads((pycoder / "tokenizer.json").read_text())
    tok["model"]["vocab"] = [1, 2, 3]  # not a token -> id map
    (d / "tokenizer.json").write_text(json.dumps(tok))
    assert_refused(pagoda_bin, d, "tokenizer", commands=("info",))
