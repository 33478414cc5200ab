"""Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens) through `pagoda serve`
with the official `anthropic` client and the built-in model: messages.create, messages.stream
(text_stream and get_final_message), a tool-use round trip (tool_choice {"type": "any"}: the call
is forced by the tool grammar, so even the 135M model returns a valid one; the tool_result then
goes back), a named tool, the system prompt (string and text blocks), stop_sequences (stop_reason
"stop_sequence" with the sequence, streamed and not), x-api-key authentication, count_tokens,
and bad input answered with 400s in Anthropic's error shape while the server keeps serving."""
import json

import pytest

from serve_harness import Server, running

anthropic = pytest.importorskip("anthropic")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"name": "get_weather", "description": "Get the current weather in a city",
           "input_schema": {"type": "object", "properties": {
               "city": {"type": "string", "maxLength": 40},
               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
               "required": ["city", "unit"]}}
ADD = {"name": "add", "description": "Add two integers",
       "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                        "required": ["a", "b"]}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["name"]: t["input_schema"] for t in TOOLS}
HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]
KEY = "sk-anthropic-test-key"


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2")


def client(s, **kw):
    kw.setdefault("api_key", "unused")
    return anthropic.Anthropic(base_url=s.url, max_retries=0, timeout=180, **kw)


def create(s, **kw):
    kw.setdefault("max_tokens", 32)
    kw.setdefault("messages", HELLO)
    return client(s).messages.create(model=s.model_name, **kw)


def check_error(status, body, want_status, want_type, *words):
    """An Anthropic error body: {"type": "error", "error": {"type", "message"}}."""
    assert status == want_status, (status, body)
    e = json.loads(body)
    assert e["type"] == "error" and set(e) == {"type", "error"}, e
    assert e["error"]["type"] == want_type, e
    assert isinstance(e["error"]["message"], str) and e["error"]["message"], e
    for w in words:
        assert w.lower() in e["error"]["message"].lower(), (w, e)


def test_create(server):
    r = create(server, extra_body={"temperature": 0.7})
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert r.model == server.model_name
    assert r.stop_reason in ("end_turn", "max_tokens") and r.stop_sequence is None
    assert r.content and r.content[0].type == "text" and r.content[0].text
    assert 0 < r.usage.output_tokens <= 32 and r.usage.input_tokens > 5
    # max_tokens is honoured: 1 token, stop_reason max_tokens
    r = create(server, max_tokens=1, extra_body={"temperature": 0})  # greedy: deterministic, not an end
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 1


def test_system_prompt(server):
    c = client(server)
    base = c.messages.count_tokens(model=server.model_name, messages=HELLO).input_tokens
    sys_text = "You are a pirate. Answer like a pirate would, always."
    with_sys = c.messages.count_tokens(model=server.model_name, messages=HELLO, system=sys_text).input_tokens
    blocks = [{"type": "text", "text": "You are a pirate."}, {"type": "text", "text": "Answer like a pirate would, always."}]
    with_blocks = c.messages.count_tokens(model=server.model_name, messages=HELLO, system=blocks).input_tokens
    assert with_sys != base and with_blocks > 0
    # the prompt the model sees holds the system text: the usage of a generation says so too
    r = create(server, system=sys_text, max_tokens=4)
    assert r.usage.input_tokens == with_sys
    r = create(server, system=blocks, max_tokens=4)
    assert r.usage.input_tokens == with_blocks


def test_stream(server):
    c = client(server)
    with c.messages.stream(model=server.model_name, max_tokens=40, messages=HELLO, extra_body={"temperature": 0.8}) as st:
        text = "".join(st.text_stream)
        final = st.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.id.startswith("msg_") and final.stop_reason in ("end_turn", "max_tokens")
    assert 0 < final.usage.output_tokens <= 40 and final.usage.input_tokens > 5


def test_stream_raw_events(server):
    """The event sequence and the SSE framing (event: + data: lines), read off the socket."""
    st, _, body = server.request("POST", "/v1/messages", {"model": server.model_name, "max_tokens": 8, "stream": True,
                                                          "messages": HELLO}, timeout=180)
    assert st == 200
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name
        events.append(data)
    names = [e["type"] for e in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"], names
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    assert events[0]["message"]["usage"]["input_tokens"] > 5 and events[0]["message"]["content"] == []
    assert events[-2]["delta"]["stop_reason"] == "max_tokens" and events[-2]["usage"]["output_tokens"] == 8


def tool_uses(msg, names=None):
    out = [b for b in msg.content if b.type == "tool_use"]
    assert out, msg
    for b in out:
        assert b.id.startswith("toolu_") and b.name in (names or SCHEMAS), b
        jsonschema.validate(b.input, SCHEMAS[b.name])
    return out


def test_tool_use_round_trip(server):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    r = create(server, messages=[question], tools=TOOLS, tool_choice={"type": "any"}, max_tokens=128, extra_body={"temperature": 1.0})
    assert r.stop_reason == "tool_use", r
    calls = tool_uses(r)
    # the result goes back as a tool_result block (content as a string and as text blocks)
    results = [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "18 degrees and sunny"}]
    if len(calls) > 1:
        results += [{"type": "tool_result", "tool_use_id": b.id, "content": [{"type": "text", "text": "5"}]}
                    for b in calls[1:]]
    follow = [question, {"role": "assistant", "content": [b.model_dump() for b in r.content]},
              {"role": "user", "content": results}]
    n_before = client(server).messages.count_tokens(model=server.model_name, messages=[question], tools=TOOLS)
    n_after = client(server).messages.count_tokens(model=server.model_name, messages=follow, tools=TOOLS)
    assert n_after.input_tokens > n_before.input_tokens
    a = create(server, messages=follow, tools=TOOLS, max_tokens=48)
    assert a.stop_reason in ("end_turn", "max_tokens", "tool_use") and a.content
    assert a.usage.input_tokens == n_after.input_tokens
    if a.stop_reason == "tool_use":
        tool_uses(a)
    else:
        assert a.content[0].type == "text"


def test_named_tool_and_stream(server):
    c = client(server)
    with c.messages.stream(model=server.model_name, max_tokens=128, messages=[{"role": "user", "content": "2 + 3?"}],
                           tools=TOOLS, tool_choice={"type": "tool", "name": "add"}) as st:
        final = st.get_final_message()
    assert final.stop_reason == "tool_use"
    calls = tool_uses(final, ["add"])
    assert len(calls) == 1 and isinstance(calls[0].input["a"], int)
    # tool_choice none: no tools rendered, plain text
    r = create(server, tools=TOOLS, tool_choice={"type": "none"}, max_tokens=8)
    assert all(b.type == "text" for b in r.content)


def test_stop_sequences(server):
    prompt = [{"role": "user", "content": "Count from one to twenty in words, separated by spaces."}]
    full = create(server, messages=prompt, max_tokens=40, extra_body={"temperature": 0})
    text = full.content[0].text
    assert len(text) > 12, text
    stop = text[6:9]
    expect = text[:text.index(stop)]
    r = create(server, messages=prompt, max_tokens=40, extra_body={"temperature": 0}, stop_sequences=["\x01never", stop])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == stop, r
    assert "".join(b.text for b in r.content) == expect
    with client(server).messages.stream(model=server.model_name, messages=prompt, max_tokens=40, extra_body={"temperature": 0},
                                        stop_sequences=[stop]) as st:
        streamed = "".join(st.text_stream)
        final = st.get_final_message()
    assert streamed == expect and final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    # no stop string matched: end_turn or max_tokens, stop_sequence null
    r = create(server, messages=prompt, max_tokens=6, extra_body={"temperature": 0}, stop_sequences=["\x01never"])
    assert r.stop_reason == "max_tokens" and r.stop_sequence is None


def test_count_tokens(server):
    c = client(server)
    short = c.messages.count_tokens(model=server.model_name, messages=[{"role": "user", "content": "Hi"}])
    long = c.messages.count_tokens(model=server.model_name,
                                   messages=[{"role": "user", "content": "Hi " + "and more words " * 20}])
    tools = c.messages.count_tokens(model=server.model_name, messages=[{"role": "user", "content": "Hi"}], tools=TOOLS)
    # (the built-in template does not render tools: their count is at least the plain one)
    assert 0 < short.input_tokens < long.input_tokens and tools.input_tokens >= short.input_tokens
    r = create(server, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert r.usage.input_tokens == short.input_tokens


def test_output_config_json_schema(server):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 150}},
              "required": ["name", "age"], "additionalProperties": False}
    r = create(server, max_tokens=96, messages=[{"role": "user", "content": "Invent a person."}],
               output_config={"format": {"type": "json_schema", "schema": schema}})
    assert r.stop_reason == "end_turn", r
    jsonschema.validate(json.loads(r.content[0].text), schema)


def post(s, body, path="/v1/messages", headers=None):
    st, _, data = s.request("POST", path, body if isinstance(body, bytes) else body, headers=headers, timeout=120)
    return st, data


BAD = [
    ("no-max-tokens", {"messages": HELLO}, "max_tokens"),
    ("no-messages", {"max_tokens": 4}, "messages"),
    ("empty-messages", {"max_tokens": 4, "messages": []}, "messages"),
    ("messages-not-array", {"max_tokens": 4, "messages": "hi"}, "messages"),
    ("bad-role", {"max_tokens": 4, "messages": [{"role": "system", "content": "x"}]}, "role"),
    ("image", {"max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}, "not supported"),
    ("document", {"max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}, "not supported"),
    ("tool-result-image", {"max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "image", "source": {}}]}]}]},
     "not supported"),
    ("tool-use-in-user", {"max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {}}]}]}, "tool_use"),
    ("tool-use-input-not-object", {"max_tokens": 4, "messages": [HELLO[0], {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "add", "input": "1"}]}]}, "input"),
    ("unknown-field", {"max_tokens": 4, "messages": HELLO, "frobnicate": 1}, "frobnicate"),
    ("max-tokens-zero", {"max_tokens": 0, "messages": HELLO}, "max_tokens"),
    ("temperature-type", {"max_tokens": 4, "messages": HELLO, "temperature": "hot"}, "temperature"),
    ("tool-no-schema", {"max_tokens": 4, "messages": HELLO, "tools": [{"name": "x"}]}, "input_schema"),
    ("server-tool", {"max_tokens": 4, "messages": HELLO, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "not supported"),
    ("tool-choice-type", {"max_tokens": 4, "messages": HELLO, "tools": TOOLS, "tool_choice": {"type": "maybe"}},
     "tool_choice"),
    ("tool-choice-unknown-name", {"max_tokens": 4, "messages": HELLO, "tools": TOOLS,
                                  "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
    ("tool-choice-any-no-tools", {"max_tokens": 4, "messages": HELLO, "tool_choice": {"type": "any"}}, "tools"),
    ("output-format-type", {"max_tokens": 4, "messages": HELLO, "output_config": {"format": {"type": "xml"}}},
     "json_schema"),
    ("stop-not-array", {"max_tokens": 4, "messages": HELLO, "stop_sequences": "x"}, "stop_sequences"),
]


@pytest.mark.parametrize("name,body,word", BAD, ids=[b[0] for b in BAD])
def test_bad_input(server, name, body, word):
    st, data = post(server, {"model": server.model_name, **body})
    check_error(st, data, 400, "invalid_request_error", word)


def test_bad_bodies_and_routes(server):
    check_error(*post(server, b"{not json"), 400, "invalid_request_error", "JSON")
    check_error(*post(server, b"[1, 2]"), 400, "invalid_request_error", "object")
    check_error(*post(server, {"model": "claude-nonexistent", "max_tokens": 4, "messages": HELLO}), 404,
                "not_found_error", "claude-nonexistent")
    check_error(*post(server, {"model": server.model_name, "messages": "x"}, path="/v1/messages/count_tokens"), 400,
                "invalid_request_error", "messages")
    st, _, data = server.request("GET", "/v1/messages")
    check_error(st, data, 405, "invalid_request_error", "not allowed")
    # the SDK raises its typed errors from these bodies
    with pytest.raises(anthropic.BadRequestError) as e:
        create(server, messages=[{"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
    assert e.value.status_code == 400 and e.value.body["error"]["type"] == "invalid_request_error"
    assert create(server, max_tokens=2).usage.output_tokens > 0  # still serving


def test_x_api_key(pagoda_bin, builtin_model):
    s = Server(pagoda_bin, builtin_model, "--kv-mem", "128M", "-t", "2", "--api-key", KEY)
    try:
        with pytest.raises(anthropic.AuthenticationError) as e:
            client(s, api_key="wrong").messages.create(model=s.model_name, max_tokens=2, messages=HELLO)
        assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"
        st, _, data = s.request("POST", "/v1/messages", {"model": s.model_name, "max_tokens": 2, "messages": HELLO})
        check_error(st, data, 401, "authentication_error", "API key")
        st, _, data = s.request("POST", "/v1/messages/count_tokens", {"model": s.model_name, "messages": HELLO},
                                headers={"x-api-key": "wrong"})
        check_error(st, data, 401, "authentication_error", "API key")
        r = client(s, api_key=KEY).messages.create(model=s.model_name, max_tokens=2, messages=HELLO)
        assert r.usage.output_tokens > 0
        # Bearer works on this route too (the SDK's auth_token), and x-api-key on OpenAI's routes
        r = anthropic.Anthropic(base_url=s.url, auth_token=KEY, max_retries=0, timeout=180).messages.count_tokens(
            model=s.model_name, messages=HELLO)
        assert r.input_tokens > 0
        st, _, _ = s.request("GET", "/v1/models", headers={"x-api-key": KEY})
        assert st == 200
        assert s.stop() == 0, s.text()
    finally:
        s.close()
