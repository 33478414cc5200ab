"""`pagoda serve` end to end: the real server on 127.0.0.1 driven by the official `openai` client
and by curl. Greedy streamed text must equal greedy non-streamed text, stop strings cut where
they should, n, logprobs, seeds, usage (with cached prompt tokens) and include_usage follow the
OpenAI shapes; a Hugging Face folder is served too, with fill-in-the-middle through `suffix`."""
import json
import shutil
import subprocess
import time

import pytest

from serve_harness import Server, sse_events, running

openai = pytest.importorskip("openai")

NAME = "SmolLM2-135M-Instruct.Q4_1"
CHAT = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models(client, server, builtin_model):
    ids = [m.id for m in client.models.list().data]
    assert ids == [NAME]
    m = client.models.retrieve(NAME)
    assert m.id == NAME and m.object == "model" and m.owned_by == "pagoda"
    # the model path as given on the command line is accepted as the model name too
    r = client.completions.create(model=str(builtin_model), prompt="Hi", max_tokens=2, temperature=0)
    assert r.model == NAME


def test_chat_non_streaming(client):
    t = int(time.time())
    r = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == NAME
    assert abs(r.created - t) < 60
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content.strip()
    assert c.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 5 and 1 <= u.completion_tokens <= 12
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    if c.finish_reason == "length":
        assert u.completion_tokens == 12
    assert 0 <= u.prompt_tokens_details.cached_tokens <= u.prompt_tokens


def test_chat_stream_equals_non_stream(client):
    ref = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=24, temperature=0)
    chunks = list(client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=24, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ref.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [ref.choices[0].finish_reason]


def test_completions_stream_equals_non_stream(client):
    kw = dict(model=NAME, prompt="Once upon a time", max_tokens=24, temperature=0)
    ref = client.completions.create(**kw)
    assert ref.object == "text_completion" and ref.id.startswith("cmpl-")
    chunks = list(client.completions.create(**kw, stream=True))
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == ref.choices[0].text and text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        ref.choices[0].finish_reason]
    assert ref.usage.completion_tokens <= 24


def test_stop_strings(client):
    kw = dict(model=NAME, prompt="1, 2, 3, 4, 5,", max_tokens=24, temperature=0)
    base = client.completions.create(**kw).choices[0].text
    assert len(base) > 8, base
    stop = base[len(base) // 2:len(base) // 2 + 2]
    cut = base.index(stop)
    r = client.completions.create(**kw, stop=[stop, "never-occurs-xyz"])
    assert r.choices[0].text == base[:cut]
    assert r.choices[0].finish_reason == "stop"
    # the same through chat, as a single string, streamed
    ref = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=24, temperature=0)
    content = ref.choices[0].message.content
    stop = content[len(content) // 2:len(content) // 2 + 3]
    chunks = list(client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=24, temperature=0,
                                                 stop=stop, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == content[:content.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_n2(client):
    r = client.completions.create(model=NAME, prompt="The weather today is", n=2, max_tokens=8, temperature=1.0,
                                  seed=7, logprobs=1)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert r.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in r.choices)
    chunks = list(client.chat.completions.create(model=NAME, messages=CHAT, n=2, max_tokens=8, temperature=1.0,
                                                 seed=3, stream=True))
    text = {0: "", 1: ""}
    finish = {}
    for c in chunks:
        for ch in c.choices:
            text[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    assert text[0] and text[1]
    assert set(finish) == {0, 1}


def test_logprobs(client):
    r = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        tops = [x.logprob for x in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert t.token == t.top_logprobs[0].token  # greedy picks the most likely token
        assert abs(t.logprob - tops[0]) < 1e-5
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    if r.choices[0].finish_reason == "length":
        assert "".join(t.token for t in content) == r.choices[0].message.content

    c = client.completions.create(model=NAME, prompt="The capital of France is", max_tokens=6, temperature=0,
                                  logprobs=2)
    lp = c.choices[0].logprobs
    n = c.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert all(len(d) == 2 for d in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    if c.choices[0].finish_reason == "length":
        assert "".join(lp.tokens) == c.choices[0].text
    # streamed logprobs carry the same numbers
    chunks = list(client.completions.create(model=NAME, prompt="The capital of France is", max_tokens=6,
                                            temperature=0, logprobs=2, stream=True))
    streamed = [x for ch in chunks if ch.choices and ch.choices[0].logprobs for x in ch.choices[0].logprobs.token_logprobs]
    assert streamed == pytest.approx(lp.token_logprobs, abs=1e-6)


def test_seed_reproducible(client):
    kw = dict(model=NAME, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=16,
              temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    s = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kw, stream=True)
                if c.choices)
    assert a == b == s


def test_include_usage_and_cached_tokens(client):
    long_prompt = "Here is a list of fruits: " + ", ".join(["apple", "banana", "cherry", "grape"] * 20) + "."
    msgs = [{"role": "user", "content": long_prompt}]
    ref = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=6, temperature=0)
    chunks = list(client.chat.completions.create(model=NAME, messages=msgs, max_tokens=6, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert last.usage.prompt_tokens == ref.usage.prompt_tokens > 64
    assert last.usage.completion_tokens == ref.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    # the second time, the prompt's full KV blocks come from the prefix cache
    cached = last.usage.prompt_tokens_details.cached_tokens
    assert 16 <= cached < last.usage.prompt_tokens


def test_max_completion_tokens_prompt_ids_echo(client):
    r = client.chat.completions.create(model=NAME, messages=CHAT, max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens <= 3
    r = client.completions.create(model=NAME, prompt=[504, 3458, 314, 253], max_tokens=4, temperature=0, echo=True)
    assert r.usage.prompt_tokens == 4
    r2 = client.completions.create(model=NAME, prompt=[504, 3458, 314, 253], max_tokens=4, temperature=0)
    assert r.choices[0].text.endswith(r2.choices[0].text) and len(r.choices[0].text) > len(r2.choices[0].text)
    r3 = client.completions.create(model=NAME, prompt="Hello there", max_tokens=3, temperature=0, echo=True)
    assert r3.choices[0].text.startswith("Hello there")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl(server, client):
    body = {"model": NAME, "messages": CHAT, "max_tokens": 10, "temperature": 0}
    r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
                        "-d", json.dumps(body), server.url + "/v1/chat/completions"],
                       capture_output=True, text=True, timeout=60)
    payload, code = r.stdout.rsplit("\n", 1)
    assert code == "200", r.stdout + r.stderr
    j = json.loads(payload)
    assert j["object"] == "chat.completion" and j["usage"]["completion_tokens"] <= 10
    ref = j["choices"][0]["message"]["content"]
    r = subprocess.run(["curl", "-sSN", "-i", "-H", "Content-Type: application/json",
                        "-d", json.dumps({**body, "stream": True}), server.url + "/v1/chat/completions"],
                       capture_output=True, timeout=60)
    head, _, sse = r.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head.lower()
    assert sse.endswith("data: [DONE]\n\n")
    events = sse_events(sse.split("\n"))
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == ref


# ---- a Hugging Face folder: pycoder-tiny ----

@pytest.fixture(scope="module")
def pycoder(pagoda_bin, shared):
    path = shared / "models" / "pycoder-tiny"
    if not (path / "config.json").exists():
        pytest.skip(f"{path} not found")
    s = Server(pagoda_bin, path, "--kv-mem", "64M", "-t", "2")
    yield s, path
    rc = s.stop()
    log = s.text()
    s.close()
    assert rc == 0, log


def test_hf_folder_completion(pycoder):
    s, path = pycoder
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in c.models.list().data] == ["pycoder-tiny"]
    r = c.completions.create(model="pycoder-tiny", prompt="def fibonacci(n):\n", max_tokens=24, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens > 0
    assert r.usage.prompt_tokens >= 4


def test_fim_suffix(pycoder):
    s, path = pycoder
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    tok_json = json.loads((path / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in tok_json.get("added_tokens", [])}
    prefix, suffix = "def add(a, b):\n    ", "\n    return c\n"
    has_fim = all(t in added for t in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"))
    if not has_fim:
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model="pycoder-tiny", prompt=prefix, suffix=suffix, max_tokens=8)
        assert "fill-in-the-middle" in str(e.value)
        return
    r = c.completions.create(model="pycoder-tiny", prompt=prefix, suffix=suffix, max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    tokenizers = pytest.importorskip("tokenizers")
    tk = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    n_pre = len(tk.encode(prefix, add_special_tokens=False).ids)
    n_suf = len(tk.encode(suffix, add_special_tokens=False).ids)
    n_bos = len(tk.encode("", add_special_tokens=True).ids)  # the post-processor's <|endoftext|>
    # [BOS] <fim_prefix> prefix <fim_suffix> suffix <fim_middle>
    assert r.usage.prompt_tokens == n_bos + 3 + n_pre + n_suf
