"""tool_choice "required" and named functions through `pagoda serve` with the official `openai`
client: the call is enforced by a grammar built from the tools (the format's wrapper, one of the
tool names, arguments following that tool's JSON Schema in strict mode), so even the 135M
built-in model returns calls that parse and validate, sampled at temperature 1, in every
tool-call format (json: the built-in template; hermes: Qwen3's template; llama3 and mistral by
--tool-call-parser). Arguments are validated with Python `jsonschema` (an independent validator).
Also: one call unless parallel_tool_calls is given true (several then allowed), streamed deltas reassemble to the non-streamed
calls, pydantic-style parameters ($defs/$ref) work, and bad tool_choice values get 400 while the
server keeps serving."""
import json

import pytest

from serve_harness import running

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
# what pydantic's model_json_schema() gives for a nested model: $defs and a local $ref
MOVE = {"type": "function", "function": {
    "name": "move_to", "description": "Move the robot to a point",
    "parameters": {"$defs": {"Point": {"type": "object", "title": "Point",
                                       "properties": {"x": {"type": "integer", "minimum": -100, "maximum": 100},
                                                      "y": {"type": "integer", "minimum": -100, "maximum": 100}},
                                       "required": ["x", "y"]}},
                   "type": "object", "title": "MoveTo",
                   "properties": {"target": {"$ref": "#/$defs/Point"}, "speed": {"type": "number"}},
                   "required": ["target"]}}}
TOOLS = [WEATHER, ADD, MOVE]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris, and what is 2 + 3?"}]
FORMATS = ["json", "hermes", "llama3", "mistral"]


@pytest.fixture(scope="module", params=FORMATS)
def server(request, pagoda_bin, builtin_model, hermes_model):
    fmt = request.param
    model = hermes_model if fmt == "hermes" else builtin_model
    yield from running(pagoda_bin, model, "--kv-mem", "256M", "-t", "2", "--tool-call-parser", fmt)


def client(s):
    return openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=180)


def chat(s, **kw):
    kw.setdefault("max_tokens", 256)
    kw.setdefault("temperature", 1.0)
    return client(s).chat.completions.create(model=s.model_name, messages=MESSAGES, tools=TOOLS, **kw)


def check_calls(message, names=None):
    """Every call names a tool (one of names if given) and its arguments validate; returns them."""
    assert message.tool_calls, message
    out = []
    for t in message.tool_calls:
        assert t.type == "function" and t.id.startswith("call_")
        assert t.function.name in (names or PARAMS), t.function.name
        args = json.loads(t.function.arguments)
        jsonschema.validate(args, PARAMS[t.function.name])
        out.append((t.function.name, args))
    return out


def test_required_gives_valid_calls(server):
    # temperature 1, several seeds: the mask, not the model's habits, keeps every call valid
    seen = set()
    for seed in range(4):
        r = chat(server, tool_choice="required", seed=seed, n=2)
        for c in r.choices:
            assert c.finish_reason == "tool_calls", (c.finish_reason, c.message)
            assert not c.message.content
            seen.update(name for name, _ in check_calls(c.message))
    assert seen, "no calls"


def test_parallel_calls(server):
    # parallel_tool_calls true: the grammar allows several calls; at temperature 1 a 135M model may
    # go on calling until max_tokens (finish "length", as on any engine), but every call that
    # finished is valid and at least one answer ends by itself
    finished = 0
    for seed in range(4):
        r = chat(server, tool_choice="required", parallel_tool_calls=True, seed=seed, n=2, max_tokens=384)
        for c in r.choices:
            assert c.finish_reason in ("tool_calls", "length"), (c.finish_reason, c.message)
            if c.finish_reason == "tool_calls":
                finished += 1
                assert not c.message.content
                check_calls(c.message)
            else:
                assert r.usage.completion_tokens >= 384
    assert finished >= 1


def test_named_function(server):
    for seed in range(3):
        c = chat(server, tool_choice={"type": "function", "function": {"name": "move_to"}}, seed=seed).choices[0]
        assert c.finish_reason == "tool_calls"
        calls = check_calls(c.message, names={"move_to"})
        assert all(-100 <= a["target"]["x"] <= 100 for _, a in calls)


def test_one_call_unless_parallel_asked(server):
    # parallel_tool_calls false, or not given (llama-server's default for forced calls), or a
    # named function (vLLM's): exactly one call
    for kw in ({"parallel_tool_calls": False}, {}, {"tool_choice": {"type": "function", "function": {"name": "add"}},
                                                    "parallel_tool_calls": True}):
        kw.setdefault("tool_choice", "required")
        for seed in range(2):
            c = chat(server, seed=seed, **kw).choices[0]
            assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1, (kw, c.message)
            check_calls(c.message)


def test_stream_reassembles(server):
    kw = dict(tool_choice="required", seed=7)
    whole = chat(server, **kw).choices[0]
    calls, finish, content = [], None, ""
    for ch in chat(server, stream=True, **kw):
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        content += d.content or ""
        for t in d.tool_calls or []:
            if t.id is not None:
                calls.append([t.function.name, t.function.arguments or ""])
            else:
                calls[t.index][1] += t.function.arguments
        finish = ch.choices[0].finish_reason or finish
    assert finish == "tool_calls" and not content
    assert calls == [[t.function.name, t.function.arguments] for t in whole.message.tool_calls]


BAD = [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"tool_choice": "sometimes"}, "tool_choice", "required"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.function.name", "required"),
    ({"tool_choice": {"type": "code", "function": {"name": "add"}}}, "tool_choice.type", "function"),
    ({"tool_choice": 3}, "tool_choice", "string or an object"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice", "response_format"),
    ({"tool_choice": "required", "tools": None}, "tool_choice", "needs 'tools'"),
    ({"tool_choice": "required", "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "dependentSchemas": {"x": {"required": ["y"]}}}}}]},
     "tools", "dependentSchemas"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
     "tools[0].function.parameters", "JSON Schema"),
]


@pytest.mark.parametrize("extra, param, words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_tool_choice_400(server, extra, param, words):
    body = {"model": server.model_name, "messages": MESSAGES, "tools": TOOLS, "max_tokens": 8, **extra}
    body = {k: v for k, v in body.items() if v is not None}
    status, _, text = server.post("/v1/chat/completions", body)
    assert status == 400, text
    err = json.loads(text)["error"]
    assert err["param"] == param and words in err["message"], err
    # and the server keeps serving
    assert chat(server, tool_choice="required", seed=1, max_tokens=128).choices[0].finish_reason == "tool_calls"
