"""The pagoda CLI end to end: info on every fixture, logits and greedy generation against the
Hugging Face references, sampling determinism, and one clear error line (never a crash) for
bad model files."""
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import ROOT

HF_MODELS = ["llama", "llama3", "mistral", "qwen2", "qwen3", "starcoder2", "gpt_bigcode", "llama_bf16"]


def test_info_gguf_fixtures(shared, run_pagoda):
    files = sorted((shared / "fixtures" / "gguf").glob("*.gguf"))
    assert files
    for f in files:
        out = run_pagoda("info", "-m", f).stdout
        assert "architecture:   llama" in out, f
        n = 20 if "tied" in f.name else 21  # 16 (15 tied) matrices + 5 norm vectors
        assert f"tensors ({n}):" in out, f
        assert "loads:          ok" in out
        assert "blk.1.ffn_down.weight" in out


def test_info_vocab_only_gguf(shared, run_pagoda):
    for f in sorted((shared / "fixtures" / "tokenizers").glob("*.gguf")):
        out = run_pagoda("info", "-m", f).stdout
        assert "tokenizer.ggml.tokens" in out, f
        assert "tensors (0):" in out, f


def test_info_hf_folders(shared, run_pagoda):
    for m in HF_MODELS:
        out = run_pagoda("info", "-m", shared / "fixtures" / "hf" / m).stdout
        assert "n_layer:        2" in out, m
        assert "tensor bytes:" in out


@pytest.mark.parametrize("name", HF_MODELS)
def test_logits_cli_matches_transformers(shared, run_pagoda, tmp_path, name):
    g = load_file(str(shared / "fixtures" / "hf" / name / "golden.safetensors"))
    save_file({"input_ids": g["input_ids"]}, str(tmp_path / "ids.safetensors"))
    run_pagoda("logits", "-m", shared / "fixtures" / "hf" / name, "-i", tmp_path / "ids.safetensors",
               "-o", tmp_path / "out.safetensors")
    got = load_file(str(tmp_path / "out.safetensors"))["logits"]
    assert got.shape == g["logits"].shape
    if name == "llama_bf16":
        # the shared golden is bf16 compute rounded to bf16 (see tests/unit/test_golden.c); hold the
        # CLI to transformers' float32 compute on the same weights instead
        assert np.abs(got - g["logits"]).max() <= 0.05
        g = load_file(str(ROOT / "tests" / "golden" / "llama_bf16_f32compute.safetensors"))
    assert np.abs(got - g["logits"]).max() <= 1e-4


@pytest.mark.parametrize("name", [m for m in HF_MODELS if m != "llama_bf16"])
def test_run_greedy_matches_transformers(shared, run_pagoda, name):
    g = load_file(str(shared / "fixtures" / "hf" / name / "golden.safetensors"))
    prompt = ",".join(str(int(x)) for x in g["greedy_prompt"][0])
    n = g["greedy_output"].shape[1]
    out = run_pagoda("run", "-m", shared / "fixtures" / "hf" / name, "--prompt-ids", prompt, "-n", n,
                     "--ignore-eos").stdout
    assert [int(x) for x in out.split()] == [int(x) for x in g["greedy_output"][0]]


def test_sampling_is_seeded(shared, run_pagoda):
    model = shared / "fixtures" / "hf" / "llama"
    args = ["run", "-m", model, "--prompt-ids", "5,6,7", "-n", 40, "--temp", "1.0", "--top-p", "0.95",
            "--ignore-eos"]
    a = run_pagoda(*args, "--seed", 1).stdout.split()
    b = run_pagoda(*args, "--seed", 1).stdout.split()
    c = run_pagoda(*args, "--seed", 2).stdout.split()
    assert len(a) == 40 and a == b
    assert a != c


def test_builtin_model_runs(builtin_model, run_pagoda):
    out = run_pagoda("info", "-m", builtin_model).stdout
    assert "tensors (272):" in out and "q4_1" in out
    gen = run_pagoda("run", "-m", builtin_model, "--prompt-ids", "1,504,3458,282,253", "-n", 8, "--ignore-eos").stdout
    ids = [int(x) for x in gen.split()]
    assert len(ids) == 8 and all(0 <= i < 49152 for i in ids)


# ---- bad model files: one clear error line, non-zero exit, no crash ----

def gguf_bytes(kvs, tensors, version=3, alignment=32, magic=b"GGUF", n_tensors=None, n_kv=None, data_size=None):
    """A GGUF file built by hand so every field can be made wrong. kvs: (key, type, value);
    tensors: (name, ne list, ggml type, offset, size in bytes)."""
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    out = magic + struct.pack("<I", version)
    out += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t)
        if t == 8:
            out += s(v)
        elif t == 4:
            out += struct.pack("<I", v)
        elif t == 6:
            out += struct.pack("<f", v)
        else:
            raise ValueError(t)
    for name, ne, typ, off, _ in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<q", n) for n in ne)
        out += struct.pack("<Iq", typ, off)
    out += b"\0" * ((-len(out)) % alignment)
    if data_size is None:
        data_size = max([off + size for _, _, _, off, size in tensors] + [0])
    return out + b"\1" * data_size


LLAMA_KV = [("general.architecture", 8, "llama"), ("llama.embedding_length", 4, 32), ("llama.block_count", 4, 1),
            ("llama.feed_forward_length", 4, 64), ("llama.attention.head_count", 4, 4),
            ("llama.context_length", 4, 64), ("llama.vocab_size", 4, 16)]


def llama_tensors(skip=None):
    shapes = [("token_embd.weight", [32, 16]), ("output_norm.weight", [32]), ("blk.0.attn_norm.weight", [32]),
              ("blk.0.attn_q.weight", [32, 32]), ("blk.0.attn_k.weight", [32, 32]), ("blk.0.attn_v.weight", [32, 32]),
              ("blk.0.attn_output.weight", [32, 32]), ("blk.0.ffn_norm.weight", [32]),
              ("blk.0.ffn_gate.weight", [32, 64]), ("blk.0.ffn_up.weight", [32, 64]), ("blk.0.ffn_down.weight", [64, 32])]
    out, off = [], 0
    for name, ne in shapes:
        if name == skip:
            continue
        size = 4 * int(np.prod(ne))
        out.append((name, ne, 0, off, size))
        off += (size + 31) // 32 * 32
    return out


def check_bad(run_pagoda, path, fragment):
    for cmd in (["info", "-m", path], ["run", "-m", path, "--prompt-ids", "1,2", "-n", "2"]):
        r = run_pagoda(*cmd, check=False)
        assert r.returncode > 0, f"{cmd}: exit {r.returncode} (negative = crashed by a signal)\n{r.stderr}"
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1, r.stderr
        if cmd[0] == "run" or fragment.startswith("!"):
            assert fragment.lstrip("!").lower() in lines[0].lower(), lines[0]


def test_valid_handmade_model_runs(run_pagoda, tmp_path):
    p = tmp_path / "ok.gguf"
    p.write_bytes(gguf_bytes(LLAMA_KV, llama_tensors()))
    run_pagoda("run", "-m", p, "--prompt-ids", "1,2", "-n", 2, "--ignore-eos")


@pytest.mark.parametrize("case", ["truncated_header", "truncated_data", "wrong_magic", "bad_version",
                                  "absurd_n_tensors", "absurd_n_kv", "out_of_bounds", "unknown_type",
                                  "absurd_ne", "missing_tensor", "huge_string"])
def test_bad_gguf(run_pagoda, tmp_path, case):
    ok = gguf_bytes(LLAMA_KV, llama_tensors())
    frag = {"truncated_header": "!", "truncated_data": "!", "wrong_magic": "!magic", "bad_version": "!version",
            "absurd_n_tensors": "!", "absurd_n_kv": "!", "out_of_bounds": "!blk.0", "unknown_type": "!type",
            "absurd_ne": "!", "missing_tensor": "blk.0.ffn_down.weight", "huge_string": "!"}[case]
    if case == "truncated_header":
        data = ok[:100]
    elif case == "truncated_data":
        data = ok[:-200]
    elif case == "wrong_magic":
        data = b"GGUX" + ok[4:]
    elif case == "bad_version":
        data = gguf_bytes(LLAMA_KV, llama_tensors(), version=99)
    elif case == "absurd_n_tensors":
        data = gguf_bytes(LLAMA_KV, llama_tensors(), n_tensors=1 << 62)
    elif case == "absurd_n_kv":
        data = gguf_bytes(LLAMA_KV, llama_tensors(), n_kv=(1 << 64) - 1)
    elif case == "out_of_bounds":
        t = llama_tensors()
        t[3] = (t[3][0], t[3][1], 0, 1 << 40, t[3][4])
        data = gguf_bytes(LLAMA_KV, t, data_size=len(ok))[: len(ok)]
    elif case == "unknown_type":
        t = llama_tensors()
        t[3] = (t[3][0], t[3][1], 99, t[3][3], t[3][4])
        data = gguf_bytes(LLAMA_KV, t)
    elif case == "absurd_ne":
        t = llama_tensors()
        t[3] = (t[3][0], [1 << 40, 1 << 40], 0, t[3][3], t[3][4])
        data = gguf_bytes(LLAMA_KV, t)
    elif case == "missing_tensor":
        data = gguf_bytes(LLAMA_KV, llama_tensors(skip="blk.0.ffn_down.weight"))
    elif case == "huge_string":
        data = ok[:24] + struct.pack("<Q", 1 << 62) + ok[32:]
    p = tmp_path / f"{case}.gguf"
    p.write_bytes(data)
    check_bad(run_pagoda, p, frag)


def test_bad_hf_folder(run_pagoda, tmp_path, shared):
    src = shared / "fixtures" / "hf" / "llama"
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text((src / "config.json").read_text())
    blob = (src / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    check_bad(run_pagoda, d, "!model.safetensors")
    (d / "model.safetensors").write_bytes(blob)
    (d / "config.json").write_text("{ not json")
    check_bad(run_pagoda, d, "!config.json")
    (d / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}')
    check_bad(run_pagoda, d, "!config.json")


def test_device_options(run_pagoda, shared):
    """--device / --gpu-layers: a bad value is a usage error; asking for a GPU where none answers
    (or in a build without CUDA) is one clear line and exit 1, never a crash. Where a GPU answers,
    the GPU run must give the CPU run's greedy tokens."""
    import os
    m = shared / "models" / "pycoder-tiny"
    r = run_pagoda("run", "-m", m, "--device", "tpu", "-p", "x", check=False)
    assert r.returncode == 2 and "--device expects cpu or cuda" in r.stderr
    r = run_pagoda("run", "-m", m, "--gpu-layers", "-3", "-p", "x", check=False)
    assert r.returncode == 2 and "--gpu-layers" in r.stderr
    r = run_pagoda("run", "-m", m, "--device", "cuda", "--gpu-memory-utilization", "1.5", "-p", "x", check=False)
    assert r.returncode == 2 and "--gpu-memory-utilization" in r.stderr
    cpu = run_pagoda("run", "-m", m, "-p", "def add(a, b):", "-n", "12").stdout
    for args in (["--device", "cuda"], ["--gpu-layers", "3"]):
        r = run_pagoda("run", "-m", m, *args, "-p", "def add(a, b):", "-n", "12", check=False)
        if os.path.exists("/dev/nvidia0") and r.returncode == 0:
            assert r.stdout == cpu, args  # pycoder-tiny's greedy tokens are far from ties
        else:
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
            assert ("CUDA" in r.stderr) or ("cuda" in r.stderr), r.stderr
            assert r.stderr.strip().count("\n") <= 2, r.stderr  # the load line and one error line
    r = run_pagoda("bench", "throughput", "-m", m, "--device", "cuda", "-c", "1", "--lens", "8/4", check=False)
    assert r.returncode == (0 if os.path.exists("/dev/nvidia0") else 1), r.stderr


# ---- text in, text out (tokenizer + chat template) ----

def test_tokenize_cli_matches_fixture(shared, run_pagoda):
    vocab = shared / "fixtures" / "tokenizers" / "ggml-vocab-gpt-2.gguf"
    cases = (shared / "fixtures" / "tokenizers" / "ggml-vocab-gpt-2.gguf.inp").read_text().split("\n__ggml_vocab_test__\n")
    expected = (shared / "fixtures" / "tokenizers" / "ggml-vocab-gpt-2.gguf.out").read_text().split("\n")
    for text, ids in list(zip(cases, expected))[:12]:
        if not text or text.startswith("-"):
            continue
        out = run_pagoda("tokenize", "-m", vocab, "--ids", "--no-special", text).stdout.split()
        assert out == ids.split(), text


def test_run_text_prompt_builtin(builtin_model, run_pagoda):
    r = run_pagoda("run", "-m", builtin_model, "-p",
                   "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", "-n", 24)
    assert "Paris" in r.stdout


def test_chat_reuses_prefix(builtin_model, pagoda_bin):
    import subprocess
    r = subprocess.run([pagoda_bin, "run", "-m", str(builtin_model), "--chat", "-n", "16"],
                       input="Hello!\nWhat is 2+2?\n", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    turns = [l for l in r.stderr.splitlines() if "cached" in l]
    assert len(turns) == 2
    # the second turn's prompt starts with the whole first turn: most of it comes from the cache
    cached = int(turns[1].split("(")[1].split()[0])
    assert cached > 30


def test_tokenize_pieces_vocab_only(shared, run_pagoda):
    """--pieces on a vocabulary-only GGUF: each piece is the vocabulary's own string for the id
    (read with gguf-py), the ids those of llama.cpp's vectors."""
    gguf = pytest.importorskip("gguf")
    vocab = shared / "fixtures" / "tokenizers" / "ggml-vocab-gpt-2.gguf"
    r = gguf.GGUFReader(str(vocab))
    f = r.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    cases = (shared / "fixtures" / "tokenizers" / "ggml-vocab-gpt-2.gguf.inp").read_text().split("\n__ggml_vocab_test__\n")
    expected = (shared / "fixtures" / "tokenizers" / "ggml-vocab-gpt-2.gguf.out").read_text().split("\n")
    checked = 0
    for text, ids in zip(cases, expected):
        if not text or text.startswith("-") or not ids.strip():
            continue
        # byte-level pieces hold no whitespace (a space is "Ġ", a newline "Ċ"): one space separates them
        out = run_pagoda("tokenize", "-m", vocab, "--pieces", "--no-special", text).stdout.rstrip("\n").split(" ")
        assert out == [tokens[int(i)] for i in ids.split()], text
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("case", ["empty", "short_header_len", "huge_header_len", "not_json", "no_input_ids",
                                  "wrong_dtype", "rank_3", "zero_rows", "offsets_outside", "offsets_mismatch",
                                  "too_many", "bad_token"])
def test_logits_bad_input_ids(shared, run_pagoda, tmp_path, case):
    """`pagoda logits` reads input_ids itself: a malformed or hostile file is one clear error line
    and exit 1, never a crash or a hang."""
    import json
    def st(header, data=b""):
        h = json.dumps(header).encode()
        return struct.pack("<Q", len(h)) + h + data
    ids = np.arange(6, dtype=np.int32).tobytes()
    good = {"input_ids": {"dtype": "I32", "shape": [2, 3], "data_offsets": [0, 24]}}
    data = {
        "empty": b"",
        "short_header_len": b"\x05\x00\x00",
        "huge_header_len": struct.pack("<Q", 1 << 62) + b"{}",
        "not_json": struct.pack("<Q", 5) + b"{oops" + ids,
        "no_input_ids": st({"x": good["input_ids"]}, ids),
        "wrong_dtype": st({"input_ids": {**good["input_ids"], "dtype": "I64"}}, ids),
        "rank_3": st({"input_ids": {**good["input_ids"], "shape": [1, 2, 3]}}, ids),
        "zero_rows": st({"input_ids": {**good["input_ids"], "shape": [0, 3], "data_offsets": [0, 0]}}),
        "offsets_outside": st({"input_ids": {**good["input_ids"], "data_offsets": [1 << 40, (1 << 40) + 24]}}, ids),
        "offsets_mismatch": st({"input_ids": {**good["input_ids"], "data_offsets": [0, 20]}}, ids),
        "too_many": st({"input_ids": {**good["input_ids"], "shape": [1 << 31, 1 << 31]}}, ids),
        "bad_token": st(good, np.array([1, 2, 3, 4, 5, 1 << 30], dtype=np.int32).tobytes()),
    }[case]
    p = tmp_path / "ids.safetensors"
    p.write_bytes(data)
    r = run_pagoda("logits", "-m", shared / "fixtures" / "hf" / "llama", "-i", p, "-o", tmp_path / "out.safetensors",
                   check=False, timeout=60)
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stderr}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("pagoda:"), r.stderr
    assert not (tmp_path / "out.safetensors").exists()


# a mistyped option: "unknown option" with the closest one, wherever it stands (last, without a
# value, it must not read as "needs a value"); the suggestions come from each subcommand's usage
@pytest.mark.parametrize("cmd,typo,meant", [
    (["run", "-m", "x"], "--temprature", "--temperature"),
    (["run", "-m", "x"], "--max-token", "--max-tokens"),
    (["serve", "x"], "--max-num-seq", "--max-num-seqs"),
    (["serve", "x"], "--allowed-origin", "--allowed-origins"),
    (["eval", "humaneval"], "--temprature", "--temperature"),
    (["bench", "throughput", "-m", "x"], "--temperatur", "--temperature"),
    (["bench", "serve"], "--request-rat", "--request-rate"),
    (["bench"], "--jsn", "--json"),
    (["bench", "grammar"], "--tokenzer", "--tokenizer"),
    (["info"], "--all-metdata", "--all-metadata"),
    (["tokenize", "-m", "x"], "--pices", "--pieces"),
    (["logits", "-m", "x"], "--thread", "--threads"),
])
@pytest.mark.parametrize("with_value", [False, True])
def test_typo_suggests_option(run_pagoda, cmd, typo, meant, with_value):
    r = run_pagoda(*cmd, typo, *(["1"] if with_value else []), check=False, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"unknown option '{typo}' (did you mean {meant}?)" in r.stderr
    assert "needs a value" not in r.stderr


def test_unknown_option_far_from_all(run_pagoda):
    r = run_pagoda("run", "--zzzzzzzzzz", check=False)
    assert r.returncode == 2 and "unknown option '--zzzzzzzzzz'" in r.stderr and "did you mean" not in r.stderr
    r = run_pagoda("run", "-m", check=False)  # a real option without its value
    assert r.returncode == 2 and "option '-m' needs a value" in r.stderr


def test_run_temperature_spellings(builtin_model, run_pagoda):
    """--temperature everywhere; run keeps its old --temp as an alias (same seeded output)."""
    outs = [run_pagoda("run", "-m", builtin_model, "-p", "Once", "-n", 6, flag, "0.8", "--seed", 3, "-t", 2).stdout
            for flag in ("--temperature", "--temp")]
    assert outs[0] == outs[1] and outs[0].strip()
