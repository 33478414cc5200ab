"""Tool calls through `pagoda serve` with the official `openai` client: the model's output parsed
into `tool_calls` (non-streamed and streamed, which must reassemble to the same calls), parallel
calls and parallel_tool_calls=false, a full tool loop (call -> tool result -> answer), malformed
output (an unknown tool with --auto-tool-grammar off, a call cut off by max_tokens) returned as plain
text, tool_choice "none",
and bad `tools` answered with 400.

The model is the built-in SmolLM2-135M-Instruct. Its own chat template does not render tools, so
two servers run: the built-in model as it is (auto picks the generic JSON parser) and a copy of
it whose template is Qwen3's (from ../shared/fixtures/tokenizers/qwen3-hf, made with gguf-py's
gguf_new_metadata), which renders tools and writes calls as <tool_call> blocks (hermes). A tiny
model does not call tools from instructions alone, so the prompts show it two earlier calls
(few-shot history, rendered by the template); at temperature 0 its output is deterministic."""
import json
import re
import subprocess
import sys

import pytest

from serve_harness import running

openai = pytest.importorskip("openai")

BUILTIN = "SmolLM2-135M-Instruct.Q4_1"
HERMES = "smol-hermes"
ID = re.compile(r"^call_[A-Za-z0-9]{24}$")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOLS = [WEATHER]


def calls(*cities, name="get_weather"):
    """An earlier assistant turn that called the tool (arguments as a JSON string, as OpenAI sends)."""
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{c}", "type": "function", "function": {"name": name, "arguments": json.dumps({"city": c})}}
        for c in cities]}


def ask(q):
    return {"role": "user", "content": q}


# two shots of one call each, then the question
ONE = [ask("What is the weather in Paris?"), calls("Paris"), ask("What is the weather in Rome?"), calls("Rome"),
       ask("What is the weather in London?")]
# two shots of two parallel calls each
TWO = [ask("Weather in Paris and Rome?"), calls("Paris", "Rome"), ask("Weather in Oslo and Bern?"),
       calls("Oslo", "Bern"), ask("Weather in London and Berlin?")]


@pytest.fixture(scope="module")
def hermes_server(pagoda_bin, hermes_model):
    yield from running(pagoda_bin, hermes_model, "--kv-mem", "256M", "-t", "2", "-v")


@pytest.fixture(scope="module")
def client(hermes_server):
    return openai.OpenAI(base_url=hermes_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def builtin_server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2", "-v")


def chat(client, messages, model=HERMES, **kw):
    kw.setdefault("max_tokens", 100)
    return client.chat.completions.create(model=model, messages=messages, temperature=0, seed=1, **kw)


def reassemble(chunks):
    """Streamed chunks -> (content or None, [{"id", "name", "arguments"}], finish_reason), checking
    the OpenAI delta shapes on the way."""
    content, out, finish = "", [], None
    for ch in chunks:
        if not ch.choices:
            continue
        c = ch.choices[0]
        d = c.delta
        if d.content:
            content += d.content
        for t in d.tool_calls or []:
            if t.id is not None:  # a call's first delta: index, id, type, name, arguments ""
                assert t.index == len(out) and ID.match(t.id) and t.type == "function"
                assert t.function.name and t.function.arguments == ""
                out.append({"id": t.id, "name": t.function.name, "arguments": ""})
            else:  # then argument fragments
                assert t.index == len(out) - 1 and t.function.name is None and t.type is None
                out[t.index]["arguments"] += t.function.arguments
        if c.finish_reason:
            assert finish is None
            finish = c.finish_reason
    return content or None, out, finish


def as_list(message):
    return [{"name": t.function.name, "arguments": t.function.arguments} for t in message.tool_calls or []]


def test_parser_chosen_from_template(hermes_server, builtin_server):
    assert "tool calls are parsed as 'hermes'" in hermes_server.text()
    assert "tool calls are parsed as 'json'" in builtin_server.text()


def test_call(client):
    r = chat(client, ONE, tools=TOOLS)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.content is None and c.message.role == "assistant"
    assert len(c.message.tool_calls) == 1
    t = c.message.tool_calls[0]
    assert ID.match(t.id) and t.type == "function"
    assert t.function.name == "get_weather"
    assert json.loads(t.function.arguments) == {"city": "London"}


def test_parallel_calls(client):
    r = chat(client, TWO, tools=TOOLS)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    got = [(t.function.name, json.loads(t.function.arguments)) for t in c.message.tool_calls]
    assert got == [("get_weather", {"city": "London"}), ("get_weather", {"city": "Berlin"})]
    assert len({t.id for t in c.message.tool_calls}) == 2
    # parallel_tool_calls false: the first call only
    r = chat(client, TWO, tools=TOOLS, parallel_tool_calls=False)
    assert [json.loads(t.function.arguments) for t in r.choices[0].message.tool_calls] == [{"city": "London"}]
    assert r.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("messages", [ONE, TWO], ids=["one", "parallel"])
def test_stream_reassembles_to_non_streamed(client, messages):
    ref = chat(client, messages, tools=TOOLS).choices[0]
    chunks = list(chat(client, messages, tools=TOOLS, stream=True))
    content, got, finish = reassemble(chunks)
    assert finish == ref.finish_reason == "tool_calls"
    assert content == ref.message.content
    assert [{"name": g["name"], "arguments": g["arguments"]} for g in got] == as_list(ref.message)
    # the arguments came in several fragments, not in one piece at the end
    n_args = sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.tool_calls
                 and ch.choices[0].delta.tool_calls[0].id is None)
    assert n_args >= 2 * len(got)


def test_tool_loop(client):
    r = chat(client, ONE, tools=TOOLS)
    m = r.choices[0].message
    assert m.tool_calls
    messages = ONE + [m.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": m.tool_calls[0].id, "content": "London: 17 degrees, cloudy"}]
    r2 = chat(client, messages, tools=TOOLS, max_tokens=60)
    c = r2.choices[0]
    assert c.finish_reason in ("stop", "length") and not c.message.tool_calls
    # the answer is text, and the tool's result reached the model through the template
    assert isinstance(c.message.content, str) and "17" in c.message.content
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens


@pytest.fixture(scope="module")
def client_parse_only(pagoda_bin, hermes_model):
    # tool_choice auto without the lazy grammar: output is only parsed, so malformed calls can happen
    for s in running(pagoda_bin, hermes_model, "--kv-mem", "256M", "-t", "2", "--auto-tool-grammar", "off"):
        yield openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)


UNKNOWN_TOOL = [ask("What time is it in Paris?"), calls("Paris", name="get_time"), ask("What time is it in Rome?"),
                calls("Rome", name="get_time"), ask("What time is it in London?")]


def test_unknown_tool_is_text(client_parse_only):
    # the history calls a tool this request does not offer: the model calls it, and its output
    # comes back as text, never an error
    client, messages = client_parse_only, UNKNOWN_TOOL
    c = chat(client, messages, tools=TOOLS).choices[0]
    assert c.finish_reason == "stop" and not c.message.tool_calls
    assert "<tool_call>" in c.message.content and "get_time" in c.message.content
    content, got, finish = reassemble(chat(client, messages, tools=TOOLS, stream=True))
    assert (content, got, finish) == (c.message.content, [], "stop")


def test_auto_grammar_keeps_calls_to_offered_tools(client):
    # the same history with the lazy tool grammar (the default): once the model opens <tool_call>,
    # only the offered tools can be named and their arguments follow the schemas
    c = chat(client, UNKNOWN_TOOL, tools=TOOLS).choices[0]
    assert c.finish_reason == "tool_calls", c
    names = {t["function"]["name"] for t in TOOLS}
    assert c.message.tool_calls and all(t.function.name in names for t in c.message.tool_calls)


def test_truncated_call_is_text(client):
    c = chat(client, ONE, tools=TOOLS, max_tokens=8).choices[0]
    assert c.finish_reason == "length" and not c.message.tool_calls
    assert c.message.content.startswith("<tool_call>")
    # streamed: nothing went out as a call (the name was not complete), so the same text
    content, got, finish = reassemble(chat(client, ONE, tools=TOOLS, max_tokens=8, stream=True))
    assert (content, got, finish) == (c.message.content, [], "length")


def test_tool_choice_none(client):
    c = chat(client, ONE, tools=TOOLS, tool_choice="none").choices[0]
    assert not c.message.tool_calls and c.finish_reason in ("stop", "length")
    assert isinstance(c.message.content, str)


def test_json_fallback_builtin(builtin_server):
    # SmolLM2's own template: calls are whole-output JSON objects, shown twice in the history
    cl = openai.OpenAI(base_url=builtin_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)

    def shot(c):
        return {"role": "assistant", "content": json.dumps({"name": "get_weather", "arguments": {"city": c}})}

    messages = [ask("What is the weather in Paris?"), shot("Paris"), ask("What is the weather in Rome?"), shot("Rome"),
                ask("What is the weather in London?")]
    c = chat(cl, messages, model=BUILTIN, tools=TOOLS).choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    assert as_list(c.message) == [{"name": "get_weather", "arguments": '{"city":"London"}'}]
    content, got, finish = reassemble(chat(cl, messages, model=BUILTIN, tools=TOOLS, stream=True))
    assert finish == "tool_calls" and content is None
    assert [{"name": g["name"], "arguments": g["arguments"]} for g in got] == as_list(c.message)
    # without tools the same output is plain text
    c = chat(cl, messages, model=BUILTIN).choices[0]
    assert c.finish_reason == "stop" and json.loads(c.message.content)["name"] == "get_weather"


@pytest.mark.parametrize("tools, param", [
    ([{"type": "function"}], "tools[0].function"),
    ([{"type": "retrieval", "function": {"name": "f"}}], "tools[0]"),
    ([{"type": "function", "function": {"name": 3}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"description": "no name"}}], "tools[0].function.name"),
    ("get_weather", "tools"),
])
def test_bad_tools_400(hermes_server, tools, param):
    status, _, body = hermes_server.post("/v1/chat/completions", {"model": HERMES, "messages": [ask("hi")], "tools": tools})
    assert status == 400, body
    err = json.loads(body)["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"


def test_bad_tool_calls_in_history_400(hermes_server):
    bad = {"role": "assistant", "content": None, "tool_calls": [{"id": "x", "type": "function"}]}
    status, _, body = hermes_server.post("/v1/chat/completions",
                                         {"model": HERMES, "messages": [ask("hi"), bad, ask("again")]})
    assert status == 400 and json.loads(body)["error"]["param"] == "messages[1].tool_calls[0].function"


def test_tool_call_parser_flag(pagoda_bin, builtin_model, hermes_model):
    r = subprocess.run([pagoda_bin, "serve", "-m", str(builtin_model), "--tool-call-parser", "xml"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--tool-call-parser" in r.stderr and "hermes" in r.stderr
    # "none": the output stays text even where it holds a call
    for s in running(pagoda_bin, hermes_model, "--kv-mem", "128M", "-t", "2", "--tool-call-parser", "none"):
        cl = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        c = chat(cl, ONE, tools=TOOLS).choices[0]
        assert not c.message.tool_calls and c.finish_reason == "stop"
        assert c.message.content.startswith("<tool_call>") and "London" in c.message.content
