"""POST /infill (llama-server's fill-in-the-middle endpoint) against the real server: the prompt
must be token for token the one llama-server's format_infill builds for the same request (checked
with a reference written here over the model's own tokenizer.json, through the prompt text and
length the server reports, and through greedy output equal to /v1/completions on the reference
token ids), on pycoder-tiny (FIM tokens, no repository tokens, BOS added) and on a StarCoder2
fixture with <fim_prefix>/<fim_suffix>/<fim_middle>/<repo_name>/<file_sep> (repository-level
pattern, budgets and truncation of prefix, suffix and extra context); llama.vscode's and
llama.vim's request bodies as their source builds them; streaming; t_max_predict_ms; bad input."""
import json
import os
import pathlib
import shutil

import pytest

from serve_harness import running

tokenizers = pytest.importorskip("tokenizers")

N_BATCH = 2048  # llama-server's default --batch-size: the prefix/suffix budget


def reference_prompt(tok, specials, add_bos, n_ctx, req, n_predict=-1):
    """llama-server's format_infill, from its description: [extra tail] [BOS] <PRE> prefix-tail prompt
    <SUF> suffix-head <MID>."""
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    pre, suf, prm = enc(req["input_prefix"]), enc(req["input_suffix"]), enc(req.get("prompt", ""))
    extra = []
    if specials.get("rep") is not None:
        extra += [specials["rep"]] + enc("myproject\n")
    for ch in req.get("input_extra", []):
        if specials.get("sep") is not None:
            extra += [specials["sep"]] + enc(ch.get("filename", "tmp") + "\n")
        else:
            extra += enc("\n\n--- snippet ---\n\n")
        extra += enc(ch["text"])
    if specials.get("sep") is not None:
        extra += [specials["sep"]] + enc("filename\n")
    n_pre = min(len(pre), 3 * (N_BATCH // 4))
    n_suf = min(len(suf), max(0, N_BATCH // 4 - (2 + len(prm))))
    n_extra = min(max(0, n_ctx - N_BATCH - 2 * n_predict), len(extra))
    out = extra[len(extra) - n_extra:]
    if add_bos:
        out.append(specials["bos"])
    out += [specials["pre"]] + pre[len(pre) - n_pre:] + prm + [specials["suf"]] + suf[:n_suf] + [specials["mid"]]
    return out


def starcoder2_fixture(shared, d):
    """The StarCoder2 test weights with a byte-level tokenizer holding StarCoder2's special tokens,
    context 4096 (so the extra context has room after llama-server's 2048-token batch)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    src = shared / "fixtures" / "hf" / "starcoder2"
    d.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    specials = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>", "<file_sep>"]
    cfg.update(max_position_embeddings=4096, bos_token_id=256, eos_token_id=256)
    (d / "config.json").write_text(json.dumps(cfg))
    os.symlink(src / "model.safetensors", d / "model.safetensors")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet, key=lambda c: ord(c)))}
    assert len(vocab) == 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                                         "add_bos_token": False}))
    return d, {"pre": 257, "mid": 258, "suf": 259, "rep": 261, "sep": 262, "bos": 256}


@pytest.fixture(scope="module")
def pycoder(pagoda_bin, shared):
    path = shared / "models" / "pycoder-tiny"
    if not (path / "tokenizer.json").exists():
        pytest.skip("pycoder-tiny not in ../shared/models")
    yield from running(pagoda_bin, path, "--kv-mem", "64M", "-t", "2")


@pytest.fixture(scope="module")
def pycoder_tok(shared):
    return tokenizers.Tokenizer.from_file(str(shared / "models" / "pycoder-tiny" / "tokenizer.json"))


@pytest.fixture(scope="module")
def sc2(pagoda_bin, shared, tmp_path_factory):
    d, specials = starcoder2_fixture(shared, tmp_path_factory.mktemp("sc2") / "starcoder2-fim")
    for s in running(pagoda_bin, d, "--kv-mem", "64M", "-t", "2"):
        yield s, tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")), specials


def infill(server, body, status=200):
    st, _, data = server.request("POST", "/infill", body, timeout=120)
    assert st == status, data
    return json.loads(data)


def complete_ids(server, ids, n):
    st, _, data = server.request("POST", "/v1/completions", {"prompt": ids, "max_tokens": n, "temperature": 0},
                                 timeout=120)
    assert st == 200, data
    return json.loads(data)["choices"][0]["text"]


def check_same_prompt(server, tok, ref_ids, r, n_predict):
    assert r["tokens_evaluated"] == len(ref_ids)
    assert r["prompt"] == tok.decode(ref_ids, skip_special_tokens=False)
    # greedy: the same text as the reference ids give as a plain completion
    assert r["content"] == complete_ids(server, ref_ids, n_predict)


PY_REQ = {"input_prefix": "import os\n\ndef add(a, b):\n    ", "input_suffix": "\n    return c\n",
          "prompt": "c = a", "input_extra": [{"filename": "util.py", "text": "def sub(a, b):\n    return a - b\n"}],
          "n_predict": 6, "temperature": 0}


def test_pycoder_prompt_layout(pycoder, pycoder_tok):
    r = infill(pycoder, PY_REQ)
    # pycoder: FIM tokens, no repository tokens, adds BOS; context 1024 < 2048: no extra context fits
    specials = {"pre": 1, "mid": 2, "suf": 3, "bos": 0}
    ref = reference_prompt(pycoder_tok, specials, True, 1024, PY_REQ)
    assert ref[:2] == [0, 1] and ref[-1] == 2
    check_same_prompt(pycoder, pycoder_tok, ref, r, 6)
    assert r["stop"] is True and r["tokens_predicted"] <= 6 and r["stop_type"] in ("limit", "eos")
    assert r["model"] and "timings" in r and r["timings"]["prompt_n"] >= 1
    assert r["generation_settings"]["n_predict"] == 6


def test_starcoder2_repo_level_layout(sc2):
    server, tok, specials = sc2
    req = {"input_prefix": "x = 1\n" * 10, "input_suffix": "print(x)\n", "prompt": "y",
           "input_extra": [{"filename": "a.py", "text": "A = 1\n"}, {"text": "no name\n"},
                           {"filename": "b/c.py", "text": "B = 2\n"}],
           "n_predict": 4, "temperature": 0}
    r = infill(server, req)
    ref = reference_prompt(tok, specials, False, 4096, req)
    # the repository-level pattern: <repo_name>myproject\n<file_sep>a.py\n...<file_sep>filename\n<fim_prefix>
    text = tok.decode(ref, skip_special_tokens=False)
    assert text.startswith("<repo_name>myproject\n<file_sep>a.py\nA = 1\n<file_sep>tmp\nno name\n<file_sep>b/c.py\n")
    assert "<file_sep>filename\n<fim_prefix>x = 1" in text and text.endswith("<fim_suffix>print(x)\n<fim_middle>")
    check_same_prompt(server, tok, ref, r, 4)


def test_starcoder2_budgets_truncate(sc2):
    """prefix over 3/4 of the batch keeps its end, suffix over the rest keeps its start, extra
    context over n_ctx - n_batch + 2 keeps its end (the chunks nearest the cursor). All three at
    their limits overflow the context by a few tokens (as in llama-server), so two requests."""
    server, tok, specials = sc2
    req = {"input_prefix": "".join(f"p{i:04d}\n" for i in range(400)),      # 2400 tokens > 1536
           "input_suffix": "".join(f"s{i:04d}\n" for i in range(120)),      # 720 tokens > 512 - 2 - 3
           "prompt": "abc", "input_extra": [{"filename": "f.py", "text": "z = 1\n"}],
           "n_predict": 2, "temperature": 0}
    r = infill(server, req)
    ref = reference_prompt(tok, specials, False, 4096, req)
    text = tok.decode(ref, skip_special_tokens=False)
    assert "p0399\n" in text and "p0000" not in text and "s0000" in text and "s0119" not in text
    assert text.startswith("<repo_name>myproject\n<file_sep>f.py\nz = 1\n")
    check_same_prompt(server, tok, ref, r, 2)
    req = {"input_prefix": "def f():\n", "input_suffix": "\n", "prompt": "",
           "input_extra": [{"filename": f"f{i}.py", "text": "z" * 300} for i in range(9)],  # > 2050
           "n_predict": 2, "temperature": 0}
    r = infill(server, req)
    ref = reference_prompt(tok, specials, False, 4096, req)
    text = tok.decode(ref, skip_special_tokens=False)
    assert "f8.py" in text and "<repo_name>" not in text and "f0.py" not in text  # the head was cut
    assert r["tokens_evaluated"] == 2050 + 1 + len("def f():\n") + 1 + 1 + 1
    check_same_prompt(server, tok, ref, r, 2)


def test_special_token_text_in_prefix_is_plain_text(sc2):
    server, tok, specials = sc2
    req = {"input_prefix": "a<fim_middle>b", "input_suffix": "<file_sep>", "n_predict": 1, "temperature": 0}
    r = infill(server, req)
    # llama-server tokenizes prefix and suffix without parsing special tokens: bytes only
    assert r["tokens_evaluated"] == len("<repo_name>myproject\n<file_sep>filename\n") - len("<repo_name>") - \
        len("<file_sep>") + 2 + 1 + len("a<fim_middle>b") + 1 + len("<file_sep>") + 1


def test_llama_vscode_requests(pycoder):
    """llama.vscode's createRequestPayload (src/llama-server.ts): the completion and the no-predict
    warm-up that sends the extra context alone."""
    chunks = [{"text": "def helper():\n    return 42\n", "time": 1733400000000, "filename": "helper.py"}]
    default_params = {"top_k": 40, "top_p": 0.99, "stream": False, "samplers": ["top_k", "top_p", "infill"],
                      "cache_prompt": True}
    body = {"input_prefix": "def main():\n    ", "input_suffix": "\n", "input_extra": chunks, "prompt": "x = ",
            "n_predict": 8, **default_params, "n_indent": 4, "t_max_prompt_ms": 500, "t_max_predict_ms": 1000}
    r = infill(pycoder, body)
    assert isinstance(r["content"], str) and r["tokens_predicted"] <= 8
    warm = {"input_prefix": "", "input_suffix": "", "input_extra": chunks, "prompt": "", "n_predict": 0,
            "samplers": [], "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 1}
    r = infill(pycoder, warm)
    assert r["content"] == "" and r["tokens_predicted"] == 0 and r["tokens_evaluated"] >= 4


def test_llama_vim_request(pycoder):
    """llama.vim's llama#fim request (autoload/llama.vim), with its response_fields."""
    fields = ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
              "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
              "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated", "tokens_cached"]
    body = {"input_prefix": "import sys\n", "input_suffix": "\nprint(y)\n",
            "input_extra": [{"text": "y = 2\n", "time": [1733400000, 12345], "filename": "other.py"}],
            "prompt": "y = ", "n_predict": 16, "n_indent": 0, "top_k": 40, "top_p": 0.99, "stream": False,
            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "t_max_prompt_ms": 500,
            "t_max_predict_ms": 500, "response_fields": fields}
    r = infill(pycoder, body)
    assert set(r) == set(fields)
    assert isinstance(r["content"], str) and r["timings/prompt_n"] >= 1 and r["truncated"] is False


def test_stream_equals_whole(pycoder):
    body = {**PY_REQ, "n_predict": 8, "stream": True}
    st, _, data = pycoder.request("POST", "/infill", body, timeout=120)
    assert st == 200
    events = [json.loads(line[5:]) for line in data.decode().splitlines() if line.startswith("data:")]
    assert events and events[-1]["stop"] is True and all(e["stop"] is False for e in events[:-1])
    assert all(len(e["tokens"]) == 1 for e in events[:-1])
    whole = infill(pycoder, {**body, "stream": False})
    assert "".join(e["content"] for e in events) == whole["content"]
    assert events[-1]["tokens_predicted"] == whole["tokens_predicted"]


def test_t_max_predict_ms(pycoder):
    body = {"input_prefix": "def f():\n    return 1\n\n\ndef g():\n", "input_suffix": "", "n_predict": 400,
            "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0, "seed": 7, "ignore_eos": True,
            "t_max_predict_ms": 1}
    free = infill(pycoder, {**body, "t_max_predict_ms": 0})
    assert "\n" in free["content"][:-1] and free["tokens_predicted"] == 400  # the same sampled text has lines
    r = infill(pycoder, body)
    assert r["has_new_line"], r["content"]  # the toy model writes lines of code
    # stopped by the time limit once a newline was out, well before n_predict
    assert r["stop_type"] == "limit" and r["tokens_predicted"] < 400


def test_return_tokens(pycoder):
    r = infill(pycoder, {**PY_REQ, "return_tokens": True})
    assert len(r["tokens"]) == r["tokens_predicted"] or len(r["tokens"]) == r["tokens_predicted"] + 1


@pytest.mark.parametrize("body,param", [
    ({"input_suffix": ""}, "input_prefix"),
    ({"input_prefix": ""}, "input_suffix"),
    ({"input_prefix": 1, "input_suffix": ""}, "input_prefix"),
    ({"input_prefix": "", "input_suffix": "", "input_extra": {"text": "x"}}, "input_extra"),
    ({"input_prefix": "", "input_suffix": "", "input_extra": [{"filename": "a"}]}, "input_extra[0]"),
    ({"input_prefix": "", "input_suffix": "", "input_extra": [{"text": "a", "filename": 3}]}, "input_extra[0]"),
    ({"input_prefix": "", "input_suffix": "", "input_extra": ["x"]}, "input_extra[0]"),
    ({"input_prefix": "", "input_suffix": "", "n_predict": "10"}, "n_predict"),
    ({"input_prefix": "", "input_suffix": "", "prompt": ["a"]}, "prompt"),
    ({"input_prefix": "", "input_suffix": "", "stop": "x"}, "stop"),
    ({"input_prefix": "", "input_suffix": "", "temperature": "hot"}, "temperature"),
])
def test_bad_input(pycoder, body, param):
    r = infill(pycoder, body, status=400)
    assert r["error"]["param"] == param and r["error"]["message"]


def test_bad_bodies(pycoder):
    for raw in (b"", b"{", b"[]", b"null", b'{"input_prefix": "\\u0000", "input_suffix": ""}'):
        st, _, data = pycoder.request("POST", "/infill", raw, timeout=60)
        assert st == 400, (raw, data)
    st, _, _ = pycoder.request("GET", "/infill", None, timeout=60)
    assert st == 405


def test_model_without_fim(pagoda_bin, builtin_model):
    for server in running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2"):
        r = infill(server, PY_REQ, status=400)
        assert "Infill is not supported by this model" in r["error"]["message"]


def test_prompts_equal_llama_server(pagoda_bin, shared, tmp_path):
    """The reference itself: llama.cpp's llama-server (../shared/anchors, c392e50) and pagoda
    serve the same GGUF (a tiny random llama whose vocabulary has <|fim_prefix|>,
    <|fim_suffix|>, <|fim_middle|>, <|repo_name|>, <|file_sep|>), context 4096; every /infill
    request must give the same prompt (text with special tokens) and the same prompt length, and
    the same response keys."""
    import subprocess
    import tarfile
    import time
    import urllib.request
    gguf = pytest.importorskip("gguf")
    tar = shared / "anchors" / "llama.cpp-c392e50-cpu-native.tar.xz"
    if not tar.exists():
        pytest.skip("llama.cpp anchor not in ../shared/anchors")
    with tarfile.open(tar) as t:
        t.extractall(tmp_path / "llama", filter="data")
    exe = next((tmp_path / "llama").rglob("llama-server"))
    from tokenizers import pre_tokenizers
    alpha = sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord)
    specials = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|repo_name|>", "<|file_sep|>"]
    toks, types = alpha + ["ĠĠ"] + specials, [1] * 257 + [3] * len(specials)
    while len(toks) < 1024:  # pagoda synth's tiny-llama vocabulary size
        toks.append(f"[UNUSED{len(toks)}]")
        types.append(5)
    w = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(["Ġ Ġ"])
    w.add_bos_token_id(256 + 1)
    w.add_eos_token_id(256 + 1)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    model = tmp_path / "fim.gguf"
    subprocess.run([pagoda_bin, "synth", "--shape", "tiny-llama", "--vocab-from", tmp_path / "vocab.gguf", "-o", model,
                    "--type", "f32", "--threads", "2"], check=True, capture_output=True, timeout=300)
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    log = open(tmp_path / "llama-server.log", "w")
    ls = subprocess.Popen([exe, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-c", "4096", "-np", "1",
                           "-t", "1"], stdout=log, stderr=subprocess.STDOUT)

    def post(url, body):
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())
    try:
        deadline = time.time() + 60
        while time.time() < deadline and ls.poll() is None:
            try:
                if json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())["status"] == "ok":
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.skip("llama-server does not run here:\n" + (tmp_path / "llama-server.log").read_text()[-2000:])
        reqs = [
            {"input_prefix": "def f(a):\n", "input_suffix": "\nreturn x\n", "prompt": "  x = ",
             "input_extra": [{"filename": "u.py", "text": "y=1\n"}, {"text": "z=2\n"}], "n_predict": 3, "temperature": 0},
            {"input_prefix": "".join(f"p{i:04d}\n" for i in range(400)),
             "input_suffix": "".join(f"s{i:04d}\n" for i in range(120)), "prompt": "abc", "n_predict": 2,
             "temperature": 0},
            {"input_prefix": "a<|fim_middle|>b", "input_suffix": "<|file_sep|>", "prompt": "<|repo_name|>",
             "n_predict": 1, "temperature": 0},
            {"input_prefix": "x", "input_suffix": "", "n_predict": 1, "temperature": 0,
             "input_extra": [{"filename": f"f{i}.py", "text": "z" * 300} for i in range(9)]},
        ]
        for pg in running(pagoda_bin, model, "--kv-mem", "64M", "-t", "1", "--max-model-len", "4096"):
            for q in reqs:
                a, b = post(f"http://127.0.0.1:{port}/infill", q), post(pg.url + "/infill", q)
                assert a["tokens_evaluated"] == b["tokens_evaluated"]
                assert a["prompt"] == b["prompt"]
                assert set(a) == set(b)
    finally:
        ls.kill()
        ls.wait()
        log.close()


def test_api_key_guards_infill(pagoda_bin, shared):
    path = shared / "models" / "pycoder-tiny"
    for server in running(pagoda_bin, path, "--kv-mem", "64M", "-t", "2", "--api-key", "sekrit"):
        body = {"input_prefix": "a", "input_suffix": "b", "n_predict": 1}
        st, _, _ = server.request("POST", "/infill", body, timeout=60)
        assert st == 401
        st, _, _ = server.request("POST", "/infill", body, headers={"Authorization": "Bearer sekrit"}, timeout=60)
        assert st == 200
