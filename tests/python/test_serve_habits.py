"""The habits clients of vLLM and llama-server bring to `pagoda serve`: CORS (--allowed-origins,
preflights answered before authentication), X-Request-Id (echoed in the response and the log
line, made when absent), unknown request fields ignored with one logged warning per request
(--strict-requests: 400), llama.cpp's n_predict and other known fields, `pagoda serve MODEL`
(positional), --version, and vLLM / llama.cpp flag spellings. Real HTTP clients (requests, the
openai SDK) over real sockets."""
import re
import time

import openai
import pytest
import requests

from serve_harness import Server, running

KEY = "habits-key"
ORIGIN = "http://app.example:3000"
C = "/v1/chat/completions"
MSGS = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def cors_server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2", "--api-key", KEY,
                       "--allowed-origins", f"{ORIGIN}, http://other.example")


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    """Defaults (no CORS, unknown fields ignored), started with the model positional."""
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2", positional=True)


def logged(server, pattern, timeout=30):
    """Whether the server's log shows pattern: a request's line is written when MHD reports it
    complete, which may be just after the client has its answer."""
    deadline = time.time() + timeout
    while not re.search(pattern, server.text()):
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def preflight(server, path, origin, headers="authorization, content-type"):
    return requests.options(server.url + path, timeout=30, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers})


def test_cors_preflight(cors_server):
    r = preflight(cors_server, C, ORIGIN, "authorization, content-type, x-stainless-os")
    assert r.status_code == 204, r.text  # not 401: a preflight carries no credentials
    h = r.headers
    assert h["Access-Control-Allow-Origin"] == ORIGIN and "Origin" in h.get("Vary", "")
    assert "POST" in h["Access-Control-Allow-Methods"]
    allowed = {x.strip().lower() for x in h["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-api-key", "anthropic-version", "x-request-id",
            "x-stainless-os"} <= allowed
    assert int(h["Access-Control-Max-Age"]) > 0
    # the second listed origin too; an unlisted one gets no grant (the browser then refuses)
    assert preflight(cors_server, C, "http://other.example").headers["Access-Control-Allow-Origin"] == "http://other.example"
    r = preflight(cors_server, C, "http://evil.example")
    assert "Access-Control-Allow-Origin" not in r.headers
    # GET routes list their own methods
    r = preflight(cors_server, "/v1/models", ORIGIN)
    assert "GET" in r.headers["Access-Control-Allow-Methods"]


def test_cors_on_responses(cors_server):
    auth = {"Authorization": f"Bearer {KEY}", "Origin": ORIGIN}
    r = requests.post(cors_server.url + C, json={"messages": MSGS, "max_tokens": 2}, headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-request-id" in r.headers["Access-Control-Expose-Headers"].lower()
    # errors carry the headers too, so a page can read why (here: no key)
    r = requests.post(cors_server.url + C, json={"messages": MSGS}, headers={"Origin": ORIGIN}, timeout=60)
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    # a stream
    with requests.post(cors_server.url + C, json={"messages": MSGS, "max_tokens": 2, "stream": True},
                       headers=auth, timeout=60, stream=True) as r:
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
        r.content


def test_cors_wildcard(pagoda_bin, builtin_model):
    for s in running(pagoda_bin, builtin_model, "--kv-mem", "32M", "-t", "1", "--allowed-origins", "*"):
        r = preflight(s, "/tokenize", "http://anything.example")
        assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
        r = requests.get(s.url + "/v1/models", headers={"Origin": "http://x.example"}, timeout=30)
        assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_no_cors_by_default(server):
    r = preflight(server, C, ORIGIN)
    assert r.status_code == 204
    assert not [k for k in r.headers if k.lower().startswith("access-control-")]
    r = requests.post(server.url + C, json={"messages": MSGS, "max_tokens": 1}, headers={"Origin": ORIGIN}, timeout=60)
    assert not [k for k in r.headers if k.lower().startswith("access-control-")]


def test_request_id_echoed_and_logged(server):
    r = requests.post(server.url + C, json={"messages": MSGS, "max_tokens": 2}, headers={"X-Request-Id": "trace-42-abc"},
                      timeout=60)
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "trace-42-abc"
    assert logged(server, r"POST /v1/chat/completions 200 .* id=trace-42-abc"), server.text()[-2000:]
    # the openai SDK sends its own headers; ask it for the raw response
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    raw = client.chat.completions.with_raw_response.create(model=server.model_name, messages=MSGS, max_tokens=1,
                                                           extra_headers={"X-Request-Id": "sdk-7"})
    assert raw.headers["x-request-id"] == "sdk-7"


def test_request_id_made_when_absent(server):
    ids = set()
    for path in ("/health", "/v1/models", "/nothing"):
        r = requests.get(server.url + path, timeout=30)
        rid = r.headers["X-Request-Id"]
        assert re.fullmatch(r"req-[0-9a-f]{24}", rid), rid
        ids.add(rid)
    assert len(ids) == 3
    assert logged(server, rf"GET /nothing 404 \S+ id={rid}"), server.text()[-2000:]
    # a completion's id carries the same digits
    r = requests.post(server.url + C, json={"messages": MSGS, "max_tokens": 1}, timeout=60)
    assert r.json()["id"] == "chatcmpl-" + r.headers["X-Request-Id"].removeprefix("req-")
    # an id too long, or with bytes outside '!'..'~', is replaced rather than echoed
    r = requests.get(server.url + "/health", headers={"X-Request-Id": "x" * 200}, timeout=30)
    assert r.headers["X-Request-Id"].startswith("req-")


def test_unknown_fields_ignored_with_one_warning(server):
    body = {"messages": MSGS, "max_tokens": 2, "frobnicate": 1, "zorblax": {"a": 1},
            # known llama.cpp / vLLM fields: accepted without a warning
            "cache_prompt": True, "id_slot": 0, "samplers": ["top_k"], "t_max_predict_ms": 500,
            "chat_template_kwargs": {"enable_thinking": False}}
    r = requests.post(server.url + C, json=body, headers={"X-Request-Id": "unk-1"}, timeout=60)
    assert r.status_code == 200, r.text
    warnings = [l for l in server.text().splitlines() if "ignored unknown field" in l and "unk-1" in l]
    assert len(warnings) == 1, warnings
    assert "frobnicate" in warnings[0] and "zorblax" in warnings[0] and "cache_prompt" not in warnings[0]
    # through the openai SDK's extra_body, as clients pass vendor fields
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    out = client.completions.create(model=server.model_name, prompt="Hi", max_tokens=1, extra_body={"top_a": 0.5})
    assert out.choices[0].text is not None
    # a known field of the wrong type is still 400
    for bad in ({"chat_template_kwargs": 5}, {"n_predict": "ten"}, {"temperature": "hot"}):
        r = requests.post(server.url + C, json={"messages": MSGS, **bad}, timeout=60)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["param"] == next(iter(bad))


def test_n_predict_is_max_tokens(server):
    for path, body in ((C, {"messages": MSGS}), ("/v1/completions", {"prompt": "Once upon a time"})):
        r = requests.post(server.url + path, json={**body, "n_predict": 3, "ignore_eos": True, "temperature": 0},
                          timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 3
        # max_tokens wins when both are given
        r = requests.post(server.url + path, json={**body, "n_predict": 3, "max_tokens": 2, "ignore_eos": True},
                          timeout=60)
        assert r.json()["usage"]["completion_tokens"] == 2


def test_strict_requests(pagoda_bin, builtin_model):
    for s in running(pagoda_bin, builtin_model, "--kv-mem", "32M", "-t", "1", "--strict-requests"):
        r = requests.post(s.url + C, json={"messages": MSGS, "max_tokens": 1, "frobnicate": 1}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "frobnicate", r.text
        r = requests.post(s.url + "/tokenize", json={"content": "x", "frobnicate": 1}, timeout=60)
        assert r.status_code == 400 and "frobnicate" in r.json()["error"]["message"]
        # known fields are still fine
        r = requests.post(s.url + C, json={"messages": MSGS, "max_tokens": 1, "cache_prompt": True}, timeout=60)
        assert r.status_code == 200, r.text


def test_positional_model(server, builtin_model):
    # the module's server was started as `pagoda serve MODEL`
    assert requests.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"] == builtin_model.stem


def test_model_twice_is_an_error(run_pagoda, builtin_model):
    r = run_pagoda("serve", builtin_model, "-m", builtin_model, "--port", "0", check=False, timeout=60)
    assert r.returncode == 2 and "given twice" in r.stderr
    r = run_pagoda("serve", "--port", "0", check=False, timeout=60)
    assert r.returncode == 2 and "give a model" in r.stderr


def test_version(run_pagoda):
    a = run_pagoda("--version").stdout.strip()
    b = run_pagoda("serve", "--version").stdout.strip()
    assert re.fullmatch(r"pagoda \d+\.\d+\.\d+( \(\S+\))?", a.splitlines()[0]), a
    # then what the build can use, one line each
    assert [l.split(":")[0] for l in a.splitlines()[1:]] == ["cpu", "cuda", "mpi", "nccl"], a
    assert a == b


@pytest.mark.parametrize("args,words", [
    (["--tensor-parallel-size", "2", "--models-dir", "."], ["--models-dir serves several models"]),
    (["-tp", "4", "--enable-runtime-lora"], ["LoRA adapters are not supported"]),
    (["--kv-cache-dtype", "fp8_e5m2"], ["--kv-cache-dtype", "fp8_e5m2", "not available"]),
    (["--kv-cache-dtype", "bfloat16"], ["not available"]),
    (["--max-num-seqs", "0"], ["--max-num-seqs"]),
    (["-ngl", "many"], ["-ngl"]),
])
def test_alias_errors(run_pagoda, builtin_model, args, words):
    r = run_pagoda("serve", builtin_model, "--port", "0", *args, check=False, timeout=60)
    assert r.returncode == 2, r.stderr
    for w in words:
        assert w in r.stderr


def test_port_in_use_is_an_error(server, run_pagoda, builtin_model):
    # a second server on a port another one listens on fails with the reason (no SO_REUSEPORT, which
    # would let it start and take half the first one's connections); the first one goes on serving
    r = run_pagoda("serve", builtin_model, "--port", str(server.port), check=False, timeout=120)
    assert r.returncode != 0 and "Address already in use" in r.stderr, r.stderr
    assert server.get("/health")[0] == 200


def test_tensor_parallel_the_model_cannot_split(run_pagoda, builtin_model):
    """outside mpirun the ranks are threads; a model they cannot split (9 heads, 2 ranks): a clear
    error from every rank, no hang"""
    r = run_pagoda("serve", builtin_model, "--port", "0", "-tp", "2", check=False, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "must divide the model's attention heads (9)" in r.stderr, r.stderr


def test_vllm_and_llama_cpp_spellings(pagoda_bin, builtin_model):
    for s in running(pagoda_bin, builtin_model, "--kv-mem", "32M", "-t", "1", "--max-num-seqs", "2",
                     "--max-num-batched-tokens", "64", "-c", "512", "-np", "2", "--kv-cache-dtype", "auto",
                     "--tensor-parallel-size", "1", "-ngl", "0", "--served-model-name", "smol", positional=True):
        models = requests.get(s.url + "/v1/models", timeout=30).json()["data"]
        assert models[0]["id"] == "smol" and models[0]["max_model_len"] == 512  # -c
        r = requests.post(s.url + C, json={"model": "smol", "messages": MSGS, "max_tokens": 2}, timeout=60)
        assert r.status_code == 200, r.text
