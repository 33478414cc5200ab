"""/v1/completions with several prompts in one request (strings or token lists), echo with
logprobs (the prompt's tokens scored: first null, as OpenAI), max_tokens 0 with echo (score only),
and min_tokens; against the real server with the official `openai` client, raw HTTP and
LangChain's OpenAI LLM (whose batch() packs prompts into one request)."""
import json

import pytest

from serve_harness import running


def sse_events(data):
    out = []
    for line in data.decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out

openai = pytest.importorskip("openai")

NAME = "SmolLM2-135M-Instruct.Q4_1"
PROMPTS = ["The capital of France is", "One, two, three,", "def add(a, b):"]


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def post(server, body):
    status, _, data = server.request("POST", "/v1/completions", body, timeout=120)
    return status, json.loads(data)


def test_prompt_list_matches_single_requests(client):
    r = client.completions.create(model=NAME, prompt=PROMPTS, max_tokens=5, temperature=0, n=2)
    assert [c.index for c in sorted(r.choices, key=lambda c: c.index)] == list(range(6))
    by_index = {c.index: c.text for c in r.choices}
    total_prompt = total_completion = 0
    for i, p in enumerate(PROMPTS):
        one = client.completions.create(model=NAME, prompt=p, max_tokens=5, temperature=0)
        # choices i*n + j belong to prompt i (OpenAI's and vLLM's numbering)
        assert by_index[2 * i] == one.choices[0].text and by_index[2 * i + 1] == one.choices[0].text
        total_prompt += one.usage.prompt_tokens
        total_completion += 2 * one.usage.completion_tokens
    assert r.usage.prompt_tokens == total_prompt and r.usage.completion_tokens == total_completion


def test_token_list_prompts(client):
    ids = [[504, 3458, 314, 253], [21, 22, 23]]
    r = client.completions.create(model=NAME, prompt=ids, max_tokens=3, temperature=0)
    assert len(r.choices) == 2 and r.usage.prompt_tokens == 7
    for i, p in enumerate(ids):
        one = client.completions.create(model=NAME, prompt=p, max_tokens=3, temperature=0)
        assert r.choices[i].text == one.choices[0].text
    mixed = client.completions.create(model=NAME, prompt=["Hello", "Hi"], max_tokens=1, temperature=0)
    assert len(mixed.choices) == 2


def test_prompt_list_streamed(server):
    body = {"model": NAME, "prompt": PROMPTS[:2], "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    status, _, data = server.request("POST", "/v1/completions", body, timeout=120)
    assert status == 200
    text, usage = {0: "", 1: ""}, None
    for ev in sse_events(data):
        if ev.get("usage"):
            usage = ev["usage"]
        for c in ev["choices"]:
            text[c["index"]] += c["text"]
    _, whole = post(server, {**body, "stream": False, "stream_options": None})
    assert text == {c["index"]: c["text"] for c in whole["choices"]}
    assert usage == whole["usage"]


def test_echo_logprobs(server):
    status, d = post(server, {"model": NAME, "prompt": "One, two, three", "max_tokens": 2, "temperature": 0,
                              "echo": True, "logprobs": 2})
    assert status == 200, d
    c = d["choices"][0]
    lp = c["logprobs"]
    n_prompt = d["usage"]["prompt_tokens"]
    assert len(lp["tokens"]) == n_prompt + 2 == len(lp["token_logprobs"]) == len(lp["top_logprobs"])
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert "".join(lp["tokens"]) == c["text"] and c["text"].startswith("One, two, three")
    assert lp["text_offset"][0] == 0
    for i in range(1, len(lp["tokens"])):
        assert lp["text_offset"][i] == lp["text_offset"][i - 1] + len(lp["tokens"][i - 1])
        top = lp["top_logprobs"][i]
        assert 1 <= len(top) <= 2 and lp["token_logprobs"][i] <= max(top.values()) + 1e-6
        assert lp["token_logprobs"][i] < 0
        if lp["tokens"][i] in top:
            assert top[lp["tokens"][i]] == lp["token_logprobs"][i]


def test_prompt_logprobs_equal_generated_ones(server, run_pagoda, builtin_model):
    """The logprob of a generated token equals the logprob the same token gets as part of the
    prompt (prompt scoring and sampling see the same distribution)."""
    status, g = post(server, {"model": NAME, "prompt": "One, two, three", "max_tokens": 4, "temperature": 0,
                              "logprobs": 1, "echo": True})
    assert status == 200
    lp = g["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == g["usage"]["prompt_tokens"] + 4
    # the whole text as token ids, scored only (max_tokens 0 with echo)
    text = g["choices"][0]["text"]
    ids = [int(x) for x in run_pagoda("tokenize", "-m", builtin_model, "--ids", "--add-special", text).stdout.split()]
    assert len(ids) == len(lp["tokens"])
    status, s = post(server, {"model": NAME, "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 0})
    assert status == 200, s
    sc = s["choices"][0]
    assert sc["text"] == text and sc["finish_reason"] == "length" and s["usage"]["completion_tokens"] == 0
    assert sc["logprobs"]["tokens"] == lp["tokens"]
    for a, b in zip(sc["logprobs"]["token_logprobs"][1:], lp["token_logprobs"][1:]):
        assert abs(a - b) < 1e-4, (a, b)


def test_max_tokens_zero(server):
    status, d = post(server, {"model": NAME, "prompt": "Hello", "max_tokens": 0})
    assert status == 400 and d["error"]["param"] == "max_tokens"
    status, d = post(server, {"model": NAME, "prompt": ["Hello", "A B C"], "max_tokens": 0, "echo": True, "n": 2})
    assert status == 200, d
    assert [c["text"] for c in d["choices"]] == ["Hello", "Hello", "A B C", "A B C"]
    assert d["usage"]["completion_tokens"] == 0 and all(c["logprobs"] is None for c in d["choices"])


def test_echo_streamed_prompt_first(server):
    body = {"model": NAME, "prompt": ["One, two", "A B"], "max_tokens": 2, "temperature": 0, "echo": True,
            "logprobs": 1, "stream": True}
    status, _, data = server.request("POST", "/v1/completions", body, timeout=120)
    assert status == 200
    seen = {}
    for ev in sse_events(data):
        for c in ev["choices"]:
            seen.setdefault(c["index"], []).append(c)
    _, whole = post(server, {**body, "stream": False})
    for i, chunks in seen.items():
        first = chunks[0]
        assert first["text"] == body["prompt"][i] and first["logprobs"]["token_logprobs"][0] is None
        lps = [x for ch in chunks if ch["logprobs"] for x in ch["logprobs"]["token_logprobs"]]
        assert lps == whole["choices"][i]["logprobs"]["token_logprobs"]
        assert "".join(ch["text"] for ch in chunks) == whole["choices"][i]["text"]


def test_min_tokens(client, server):
    chat = [{"role": "user", "content": "Say just the word yes."}]
    free = client.chat.completions.create(model=NAME, messages=chat, max_tokens=60, temperature=0)
    assert free.choices[0].finish_reason == "stop"
    n_free = free.usage.completion_tokens
    want = n_free + 8
    r = client.chat.completions.create(model=NAME, messages=chat, max_tokens=60, temperature=0,
                                       extra_body={"min_tokens": want})
    assert r.usage.completion_tokens >= want
    # a stop token id is held back too
    first = client.completions.create(model=NAME, prompt="1, 2, 3,", max_tokens=1, temperature=0, logprobs=0)
    comma = 28  # "," in this vocabulary
    r = client.completions.create(model=NAME, prompt="1, 2, 3,", max_tokens=6, temperature=0,
                                  extra_body={"stop_token_ids": [comma]})
    assert r.usage.completion_tokens < 6 and r.choices[0].finish_reason == "stop"
    r = client.completions.create(model=NAME, prompt="1, 2, 3,", max_tokens=6, temperature=0,
                                  extra_body={"min_tokens": 6, "stop_token_ids": [comma]})
    assert r.usage.completion_tokens == 6 and "," not in r.choices[0].text
    status, d = post(server, {"model": NAME, "prompt": "x", "max_tokens": 3, "min_tokens": 4})
    assert status == 400 and d["error"]["param"] == "min_tokens"


@pytest.mark.parametrize("prompt", [[[]], [1, "a"], ["a", 1], [["a"]], [[1, "b"]], [[[1]]], [], [{}],
                                    ["x"] * 1025, [[10**9]]])
def test_bad_prompts(server, prompt):
    status, d = post(server, {"model": NAME, "prompt": prompt, "max_tokens": 1})
    assert status == 400, d
    assert d["error"]["param"].startswith("prompt") and d["error"]["message"]


def test_langchain_batch(server):
    lc = pytest.importorskip("langchain_openai")
    llm = lc.OpenAI(base_url=server.url + "/v1", api_key="unused", model=NAME, temperature=0, max_tokens=4,
                    max_retries=0)
    outs = llm.batch(PROMPTS)
    assert len(outs) == 3
    for p, o in zip(PROMPTS, outs):
        assert o == llm.invoke(p)
