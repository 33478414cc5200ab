"""OpenAI's Responses API (POST /v1/responses, stateless) through `pagoda serve` with the official
`openai` client and the built-in model: responses.create (text, instructions), streaming (the
events, in sequence_number order, reassemble to the final response), a function tool
(tool_choice "required": the call is forced by the tool grammar -> a function_call item -> a
second call with the function_call_output), text.format json_schema (output validated with
jsonschema), previous_response_id refused (nothing is stored), and bad input answered with 400s
while the server keeps serving."""
import json

import pytest

from serve_harness import running

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "maxLength": 40},
               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
               "required": ["city", "unit"], "additionalProperties": False}, "strict": True}
ADD = {"type": "function", "name": "add", "description": "Add two integers",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                      "required": ["a", "b"]}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["name"]: t["parameters"] for t in TOOLS}
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2")


def client(s):
    return openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=180)


def create(s, **kw):
    kw.setdefault("max_output_tokens", 32)
    kw.setdefault("input", "Write one sentence about the sea.")
    return client(s).responses.create(model=s.model_name, **kw)


def test_create_text(server):
    r = create(server, temperature=0.7)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == server.model_name
    assert r.status in ("completed", "incomplete") and r.error is None
    assert len(r.output) == 1 and r.output[0].type == "message" and r.output[0].role == "assistant"
    part = r.output[0].content[0]
    assert part.type == "output_text" and part.text and part.annotations == []
    assert r.output_text == part.text
    u = r.usage
    assert u.input_tokens > 5 and 0 < u.output_tokens <= 32 and u.total_tokens == u.input_tokens + u.output_tokens
    assert r.temperature == pytest.approx(0.7) and r.max_output_tokens == 32
    # max_output_tokens reached: incomplete, with the reason
    r = create(server, max_output_tokens=2, temperature=0)  # greedy: deterministic, not an end
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 2 and r.output[-1].status == "incomplete"
    events, final = stream_events(server, max_output_tokens=2, temperature=0)
    assert final.status == "incomplete" and final.output[-1].status == "incomplete"
    assert [e.item.status for e in events if e.type == "response.output_item.done"] == ["incomplete"]


def test_instructions_and_items(server):
    plain = create(server, max_output_tokens=2)
    # (the built-in template has a default system prompt of ~20 tokens: the instructions replace it)
    pirate = "You are a pirate. Always answer like a pirate, with arrr and matey. " * 4
    instr = create(server, max_output_tokens=2, instructions=pirate)
    assert instr.instructions == pirate and instr.usage.input_tokens > plain.usage.input_tokens + 20
    # the same conversation as items: message items with input_text / output_text parts
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Hello."}]},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi! How can I help?"}]},
             {"role": "user", "content": "Write one sentence about the sea."}]
    r = create(server, input=items, max_output_tokens=2)
    assert r.usage.input_tokens > plain.usage.input_tokens and r.output[0].type == "message"


def stream_events(s, **kw):
    kw.setdefault("max_output_tokens", 24)
    kw.setdefault("input", "Write one sentence about the sea.")
    events = list(client(s).responses.create(model=s.model_name, stream=True, **kw))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    assert events[-1].type in ("response.completed", "response.incomplete")
    return events, events[-1].response


def test_stream_text(server):
    events, final = stream_events(server)
    types = [e.type for e in events]
    for t in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
              "response.output_text.done", "response.content_part.done", "response.output_item.done"):
        assert t in types, (t, types)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert text and done.text == text and final.output_text == text
    item_done = next(e for e in events if e.type == "response.output_item.done")
    assert item_done.item.id == final.output[0].id and item_done.item.content[0].text == text
    assert final.usage.output_tokens > 0 and final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    # the same through the SDK's stream helper (it accumulates the events into its own snapshot;
    # it wants response.completed, so the output is made to end: a small JSON object)
    fmt = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    with client(server).responses.stream(model=server.model_name, input="Invent a person.", text=fmt,
                                         max_output_tokens=200) as st:
        deltas = "".join(e.delta for e in st if e.type == "response.output_text.delta")
        r = st.get_final_response()
    assert r.output_text == deltas


def check_call(item, names=None):
    assert item.type == "function_call" and item.call_id and item.id.startswith("fc_")
    assert item.name in (names or SCHEMAS)
    args = json.loads(item.arguments)
    jsonschema.validate(args, SCHEMAS[item.name])
    return args


def test_function_call_round_trip(server):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    r = create(server, input=[question], tools=TOOLS, tool_choice="required", max_output_tokens=128, temperature=1.0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and calls, r.output
    for c in calls:
        check_call(c)
    assert r.tool_choice == "required" and len(r.tools) == 2
    follow = [question] + [c.model_dump() for c in calls] + [
        {"type": "function_call_output", "call_id": c.call_id, "output": json.dumps({"temperature": 18})} for c in calls]
    a = create(server, input=follow, tools=TOOLS, max_output_tokens=32)
    assert a.status in ("completed", "incomplete") and a.output
    assert a.usage.input_tokens > r.usage.input_tokens
    # a named function, streamed: the argument deltas reassemble to the item's arguments (greedy: sampled at
    # temperature 1 the unbounded integers can run past any token limit, and a cut-off call is text)
    events, final = stream_events(server, input="2 + 3?", tools=TOOLS, tool_choice={"type": "function", "name": "add"},
                                  max_output_tokens=128, temperature=0)
    assert final.status == "completed", final
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    calls = [o for o in final.output if o.type == "function_call"]
    assert len(calls) == 1 and done.arguments == args == calls[0].arguments and done.name == "add"
    check_call(calls[0], ["add"])


def test_json_schema(server):
    fmt = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    r = create(server, input="Invent a person.", text=fmt, max_output_tokens=96, temperature=1.0)
    assert r.status == "completed", r
    jsonschema.validate(json.loads(r.output_text), PERSON)
    assert r.text.format.type == "json_schema"
    _, final = stream_events(server, input="Invent a person.", text=fmt, max_output_tokens=96)
    jsonschema.validate(json.loads(final.output_text), PERSON)
    r = create(server, input="Give me a JSON object.", text={"format": {"type": "json_object"}}, max_output_tokens=64)
    if r.status == "completed":
        assert isinstance(json.loads(r.output_text), dict)


def test_previous_response_id(server):
    with pytest.raises(openai.BadRequestError) as e:
        create(server, previous_response_id="resp_123")
    assert e.value.status_code == 400 and "stores no responses" in e.value.message
    assert e.value.body["param"] == "previous_response_id"


BAD = [
    ("no-input", {}, "input"),
    ("input-number", {"input": 3}, "input"),
    ("input-image", {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
     "not supported"),
    ("input-file", {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "not supported"),
    ("bad-role", {"input": [{"role": "robot", "content": "x"}]}, "role"),
    ("item-reference", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "stores nothing"),
    ("unknown-item", {"input": [{"type": "computer_call", "id": "x"}]}, "computer_call"),
    ("call-no-id", {"input": [{"type": "function_call", "name": "add", "arguments": "{}"}]}, "call_id"),
    ("output-no-call-id", {"input": [{"type": "function_call_output", "output": "1"}]}, "call_id"),
    ("web-search-tool", {"input": "x", "tools": [{"type": "web_search"}]}, "not supported"),
    ("tool-no-name", {"input": "x", "tools": [{"type": "function", "parameters": {}}]}, "name"),
    ("tool-choice-unknown", {"input": "x", "tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "nope"),
    ("required-no-tools", {"input": "x", "tool_choice": "required"}, "tools"),
    ("format-type", {"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ("format-no-schema", {"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "schema"),
    ("unknown-field", {"input": "x", "frobnicate": 1}, "frobnicate"),
    ("max-output-zero", {"input": "x", "max_output_tokens": 0}, "max"),
    ("temperature-range", {"input": "x", "temperature": 5}, "temperature"),
    ("conversation", {"input": "x", "conversation": "conv_1"}, "stateless"),
    ("background", {"input": "x", "background": True}, "background"),
]


@pytest.mark.parametrize("name,body,word", BAD, ids=[b[0] for b in BAD])
def test_bad_input(server, name, body, word):
    st, _, data = server.request("POST", "/v1/responses", {"model": server.model_name, **body}, timeout=120)
    assert st == 400, (st, data)
    e = json.loads(data)["error"]
    assert e["type"] == "invalid_request_error" and word.lower() in e["message"].lower(), e


def test_bad_bodies(server):
    for body in (b"{not json", b"[]", b"", "\"caf\xe9\"".encode("latin-1")):
        st, _, data = server.request("POST", "/v1/responses", body, timeout=60)
        assert st == 400 and "error" in json.loads(data), (body, st, data)
    st, _, data = server.request("POST", "/v1/responses", {"model": "gpt-nonexistent", "input": "x"})
    assert st == 404 and json.loads(data)["error"]["code"] == "model_not_found"
    assert create(server, max_output_tokens=2).usage.output_tokens > 0  # still serving
