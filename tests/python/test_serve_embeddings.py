"""POST /v1/embeddings on a real `pagoda serve`, with real clients.

References, all independent of pagoda:
- ../shared/fixtures/embed/qwen3_lasttoken/golden.json: sentence-transformers' vectors (last-token
  pooling + Normalize) of a bare Qwen3Model package; pagoda must be within 1e-4 cosine distance,
  alone, batched, and batched while a generation request runs on the same server.
- ../shared/fixtures/gguf/tiny-llama-f32.gguf: a float64 NumPy forward pass of the Llama blocks
  (weights read with gguf-py, conventions of that fixture's README) gives the final hidden states;
  copies of the file that declare `llama.pooling_type` mean / cls / last must embed as that
  reference pools them. (transformers has no PyTorch here, so it cannot serve as the reference.)
- the built-in SmolLM2 Q4_1 model: the same NumPy forward pass over gguf-py's dequantized weights
  (within 5e-3: pagoda's quantized products round activations to 8 bits), plus properties (unit
  length, alone == batched, texts differ).
"""
import base64
import json
import pathlib
import struct
import threading

import pytest

from np_llama import llama_hidden
from serve_harness import running

np = pytest.importorskip("numpy")


def cos_dist(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def embed(server, inp, **kw):
    status, _, body = server.post("/v1/embeddings", {"input": inp, "model": server.model_name, **kw}, timeout=300)
    assert status == 200, body
    out = json.loads(body)
    assert out["object"] == "list" and out["model"] == server.model_name
    assert [d["index"] for d in out["data"]] == list(range(len(out["data"])))
    assert all(d["object"] == "embedding" for d in out["data"])
    return out


def vectors(out):
    return [d["embedding"] for d in out["data"]]


def bad(server, body, param=None, status=400):
    code, _, raw = server.post("/v1/embeddings", body)
    assert code == status, raw
    err = json.loads(raw)["error"]
    assert err["type"] == "invalid_request_error" and err["message"], err
    if param is not None:
        assert err["param"] == param, err
    return err


# ---- the sentence-transformers package ----

@pytest.fixture(scope="module")
def st_dir(shared):
    d = shared / "fixtures" / "embed" / "qwen3_lasttoken"
    if not (d / "golden.json").exists():
        pytest.skip(f"{d} not found")
    return d


@pytest.fixture(scope="module")
def golden(st_dir):
    return json.loads((st_dir / "golden.json").read_text())


@pytest.fixture(scope="module")
def st_server(pagoda_bin, st_dir):
    # auto: a sentence-transformers package is served for embeddings only
    yield from running(pagoda_bin, st_dir, "-t", "2", "--max-batch-tokens", "32")


@pytest.fixture(scope="module")
def st_gen_server(pagoda_bin, st_dir):
    # the same package for generation too (its LM head is tied to the embedding)
    yield from running(pagoda_bin, st_dir, "-t", "2", "--task", "generate", "--max-batch-tokens", "32")


def check_golden(got, golden, idx):
    for i, v in zip(idx, got):
        d = cos_dist(v, golden["embeddings"][i])
        assert d <= 1e-4, f"text {i}: cosine distance {d}"
        assert abs(np.linalg.norm(v) - 1) < 1e-5  # the package normalizes


def test_golden_alone(st_server, golden):
    for i, text in enumerate(golden["texts"]):
        out = embed(st_server, text)
        check_golden(vectors(out), golden, [i])
        # the tokenizer's post-processor (BOS) as sentence-transformers tokenized it
        assert out["usage"] == {"prompt_tokens": len(golden["input_ids"][i]), "total_tokens": len(golden["input_ids"][i])}
        by_ids = embed(st_server, golden["input_ids"][i])
        check_golden(vectors(by_ids), golden, [i])


def test_golden_batched(st_server, golden):
    n = len(golden["texts"])
    out = embed(st_server, golden["texts"])
    check_golden(vectors(out), golden, range(n))
    total = sum(map(len, golden["input_ids"]))
    assert out["usage"]["prompt_tokens"] == total
    out = embed(st_server, golden["input_ids"][::-1])
    check_golden(vectors(out), golden, range(n - 1, -1, -1))
    # many copies at once: more inputs than one step holds
    out = embed(st_server, golden["texts"] * 20)
    check_golden(vectors(out), golden, list(range(n)) * 20)


def test_golden_batched_with_generation(st_gen_server, golden):
    s = st_gen_server
    result = {}

    def generate():
        result["gen"] = s.post("/v1/completions", {"prompt": golden["texts"][5], "max_tokens": 200, "temperature": 0,
                                                   "ignore_eos": True}, timeout=300)

    t = threading.Thread(target=generate)
    t.start()
    for _ in range(5):
        out = embed(s, golden["texts"])
        check_golden(vectors(out), golden, range(len(golden["texts"])))
    t.join(300)
    status, _, body = result["gen"]
    assert status == 200, body
    assert json.loads(body)["usage"]["completion_tokens"] == 200
    # the generate-task server answers embeddings with the declared pooling, alone too
    check_golden(vectors(embed(s, golden["texts"][0])), golden, [0])


def test_base64_equals_float(st_server, golden):
    f = vectors(embed(st_server, golden["texts"], encoding_format="float"))
    b = embed(st_server, golden["texts"], encoding_format="base64")
    for vf, d in zip(f, b["data"]):
        raw = base64.b64decode(d["embedding"])
        vb = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert len(vb) == len(vf) == 64
        np.testing.assert_allclose(vb, vf, rtol=1e-6, atol=1e-7)


def test_dimensions(st_server, golden):
    full = np.array(vectors(embed(st_server, golden["texts"][1]))[0])
    for d in (1, 16, 63, 64):
        v = np.array(vectors(embed(st_server, golden["texts"][1], dimensions=d))[0])
        assert v.shape == (d,)
        want = full[:d] / np.linalg.norm(full[:d])
        np.testing.assert_allclose(v, want, rtol=1e-5, atol=1e-6)
        assert abs(np.linalg.norm(v) - 1) < 1e-5
    bad(st_server, {"input": "x", "dimensions": 65}, "dimensions")
    bad(st_server, {"input": "x", "dimensions": 0}, "dimensions")


def test_bad_inputs(st_server, golden):
    s = st_server
    bad(s, {"input": ""}, "input")
    bad(s, {"input": []}, "input")
    bad(s, {"input": [[]]}, "input[0]")
    bad(s, {"input": ["a", ""]}, "input[1]")
    bad(s, {"input": ["a", 3]}, "input")
    bad(s, {"input": [1, -2]}, "input")
    bad(s, {"input": [[1, 2], "a"]}, "input")
    bad(s, {"input": {"text": "a"}}, "input")
    bad(s, {"input": None}, "input")
    bad(s, {}, "input")
    bad(s, {"input": ["a"] * 2049}, "input")
    bad(s, {"input": [8192]}, "input")  # out of the vocabulary
    bad(s, {"input": "a", "encoding_format": "hex"}, "encoding_format")
    bad(s, {"input": "a", "frobnicate": 1}, "frobnicate")
    bad(s, {"input": "a", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens")
    bad(s, {"input": "a", "model": "no-such-model"}, "model", status=404)
    code, _, raw = s.post("/v1/embeddings", b"{not json")
    assert code == 400, raw
    # over the context (512 positions): 400 in OpenAI's words, unless truncation is asked for
    long_ids = golden["input_ids"][5] * 12
    assert len(long_ids) > 512
    err = bad(s, {"input": long_ids})
    assert "maximum context length is 512" in err["message"] and err["code"] == "context_length_exceeded"
    bad(s, {"input": ["x", "for i in range(10): print(i)\n" * 100]}, "input[1]")
    out = embed(s, long_ids, truncate_prompt_tokens=-1)
    assert out["usage"]["prompt_tokens"] == 512
    np.testing.assert_allclose(vectors(out)[0], vectors(embed(s, long_ids[-512:]))[0], rtol=1e-5, atol=1e-6)
    out = embed(s, long_ids, truncate_prompt_tokens=20)  # the last 20 tokens
    assert out["usage"]["prompt_tokens"] == 20
    np.testing.assert_allclose(vectors(out)[0], vectors(embed(s, long_ids[-20:]))[0], rtol=1e-5, atol=1e-6)
    # the server is still fine
    check_golden(vectors(embed(s, golden["texts"][2])), golden, [2])


def test_client_gone_cancels_inputs(st_server, golden):
    import socket
    import time
    from serve_harness import metric
    s = st_server
    text = "for i in range(10):\n    print(i * i)\n" * 10
    n = 2048
    texts = [f"{i} {text}" for i in range(n)]  # distinct prefixes: no KV from the prefix cache
    n_tok = embed(s, texts[:16])["usage"]["prompt_tokens"] / 16
    before = metric(s.metrics(), "pagoda:computed_tokens_total")
    body = json.dumps({"input": texts}).encode()
    with socket.create_connection(("127.0.0.1", s.port)) as c:
        c.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.5)
    deadline = time.time() + 120
    while time.time() < deadline and metric(s.metrics(), "pagoda:num_requests_live") > 0:
        time.sleep(0.1)
    m = s.metrics()
    assert metric(m, "pagoda:num_requests_live") == 0
    computed = metric(m, "pagoda:computed_tokens_total") - before
    assert computed < 0.9 * n * n_tok, f"{computed} of {n * n_tok} tokens computed after the client left"
    check_golden(vectors(embed(s, golden["texts"][4])), golden, [4])


def test_embed_only_server_refuses_generation(st_server):
    for path, body in (("/v1/completions", {"prompt": "x"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        code, _, raw = st_server.post(path, body)
        assert code == 400, raw
        err = json.loads(raw)["error"]
        assert "embeddings only" in err["message"] and err["type"] == "invalid_request_error"


def test_openai_client(st_server, golden):
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=st_server.url + "/v1", api_key="unused", max_retries=0)
    r = c.embeddings.create(model=st_server.model_name, input=golden["texts"])  # base64 on the wire
    check_golden([d.embedding for d in r.data], golden, range(len(golden["texts"])))
    assert r.usage.prompt_tokens == sum(map(len, golden["input_ids"]))
    r = c.embeddings.create(model=st_server.model_name, input=golden["texts"][0], encoding_format="float",
                            dimensions=32)
    assert len(r.data[0].embedding) == 32


def test_litellm(st_server, golden):
    litellm = pytest.importorskip("litellm")
    r = litellm.embedding(model="openai/" + st_server.model_name, api_base=st_server.url + "/v1", api_key="unused",
                          input=golden["texts"])
    got = [d["embedding"] for d in r.data]
    check_golden(got, golden, range(len(golden["texts"])))


def test_langchain(st_server, golden):
    lc = pytest.importorskip("langchain_openai")
    e = lc.OpenAIEmbeddings(model=st_server.model_name, base_url=st_server.url + "/v1", api_key="unused",
                            check_embedding_ctx_length=False, max_retries=0)
    check_golden(e.embed_documents(golden["texts"]), golden, range(len(golden["texts"])))
    check_golden([e.embed_query(golden["texts"][3])], golden, [3])


# ---- tiny Llama (f32 GGUF) against a NumPy forward pass (np_llama.py) ----


def with_pooling(src, dst, pooling_type):
    """A copy of the GGUF src that declares llama.pooling_type (gguf-py's writer)."""
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), "llama")
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.STRING:
            w.add_key_value(name, bytes(f.parts[f.data[0]]).decode(), t)
        elif t == gguf.GGUFValueType.ARRAY:
            continue  # the fixture has none
        else:
            w.add_key_value(name, f.parts[f.data[0]][0].item(), t)
    w.add_uint32("llama.pooling_type", pooling_type)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny(shared):
    p = shared / "fixtures" / "gguf" / "tiny-llama-f32.gguf"
    if not p.exists():
        pytest.skip(f"{p} not found")
    return p


IDS = [[5, 17, 300, 42, 42, 7, 511, 0, 99, 128, 3, 250, 16, 77, 400, 12, 8, 9, 260, 1],
       [1, 2, 3], [444]]


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_tiny_llama_vs_numpy(pagoda_bin, tiny, tmp_path, pooling):
    code = {"mean": 1, "cls": 2, "last": 3}[pooling]
    model = tmp_path / f"tiny-{pooling}.gguf"
    with_pooling(tiny, model, code)
    ref = [h.mean(0) if pooling == "mean" else h[0] if pooling == "cls" else h[-1] for h in llama_hidden(model, IDS)]
    # a short step budget: the 20-token input is prefilled in chunks, batched with the others
    for s in running(pagoda_bin, model, "-t", "2", "--max-batch-tokens", "8"):
        assert "task embed" in s.text()  # a declared pooling type: an embedding model
        for got, want in zip(vectors(embed(s, IDS)), ref):
            d = cos_dist(got, want)
            assert d <= 1e-6, f"{pooling}: cosine distance {d}"
            assert abs(np.linalg.norm(got) - 1) < 1e-5


def test_tiny_llama_generate_task_last_token(pagoda_bin, tiny):
    # no pooling declared and an LM head: generation by default, /v1/embeddings by last token
    ref = [h[-1] for h in llama_hidden(tiny, IDS)]
    for s in running(pagoda_bin, tiny, "-t", "2"):
        assert "task embed" not in s.text()
        for got, want in zip(vectors(embed(s, IDS)), ref):
            assert cos_dist(got, want) <= 1e-6


def test_model_without_lm_head_embeds_only(pagoda_bin, st_dir, tmp_path):
    # the package with tie_word_embeddings false: no lm_head, so no generation at all
    d = tmp_path / "nohead"
    d.mkdir()
    for f in st_dir.iterdir():
        if f.is_dir():
            (d / f.name).symlink_to(f)
        elif f.name != "config.json":
            (d / f.name).symlink_to(f)
    cfg = json.loads((st_dir / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    for s in running(pagoda_bin, d, "-t", "2"):
        code, _, raw = s.post("/v1/completions", {"prompt": "x"})
        assert code == 400 and b"embeddings only" in raw, raw
        assert len(vectors(embed(s, "import numpy as np"))[0]) == 64
    import subprocess
    r = subprocess.run([pagoda_bin, "serve", "-m", d, "--port", "0", "--task", "generate"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "no LM head" in r.stderr, r.stderr


# ---- the built-in model ----

def test_builtin_model_vs_numpy(pagoda_bin, builtin_model):
    """SmolLM2 Q4_1 (tied head, no pooling declared: last token) against the NumPy forward pass over
    gguf-py's dequantized weights. pagoda's Q4_1 products quantize activations to 8 bits, so the
    bound is looser than the f32 fixture's (measured: 2e-4 .. 1.4e-3 cosine distance)."""
    ids = [[1, 504, 3458, 314, 4649, 30, 2, 7000, 123, 45, 9999, 31, 17], [28, 2000, 17, 40000, 5], [600]]
    ref = [h[-1] for h in llama_hidden(builtin_model, ids)]
    for s in running(pagoda_bin, builtin_model, "-t", "2"):
        for got, want in zip(vectors(embed(s, ids)), ref):
            d = cos_dist(got, want)
            assert d <= 5e-3, f"cosine distance {d}"


def test_builtin_model_properties(pagoda_bin, builtin_model):
    texts = ["The capital of France is Paris.", "def add(a, b): return a + b", "The capital of France is Paris."]
    for s in running(pagoda_bin, builtin_model, "-t", "2"):
        batched = vectors(embed(s, texts))
        assert all(len(v) == 576 and abs(np.linalg.norm(v) - 1) < 1e-4 for v in batched)
        alone = [vectors(embed(s, t))[0] for t in texts]
        for a, b in zip(alone, batched):
            assert cos_dist(a, b) <= 1e-5
        assert cos_dist(batched[0], batched[2]) <= 1e-6
        assert cos_dist(batched[0], batched[1]) > 1e-3
        # and it still generates
        code, _, raw = s.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4})
        assert code == 200, raw
