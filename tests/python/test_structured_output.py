"""Structured output through `pagoda serve` with the official `openai` client: every constraint
dialect (OpenAI response_format, vLLM structured_outputs and guided_*, llama.cpp grammar /
json_schema) on the built-in model, sampled at temperature 1 so the mask, not the model's habits,
is what keeps the output in the language; n > 1, streaming, constrained and free requests in one
batch; bad grammars answered 400 while the server keeps serving. Outputs are checked by Python
(re.fullmatch, json + jsonschema), never by pagoda itself."""
import concurrent.futures as cf
import json
import re
import time

import pytest

from serve_harness import running

openai = pytest.importorskip("openai")

NAME = "SmolLM2-135M-Instruct.Q4_1"
CHAT = [{"role": "user", "content": "Write something."}]


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def chat(client, extra, **kw):
    kw.setdefault("temperature", 1.0)
    extra = extra or None
    kw.setdefault("max_tokens", 64)
    return client.chat.completions.create(model=NAME, messages=CHAT, extra_body=extra, **kw)


def test_choice_sampled(client):
    options = ["yes", "no", "maybe not", "ask again later"]
    seen = set()
    for seed in range(6):
        r = chat(client, {"structured_outputs": {"choice": options}}, seed=seed)
        c = r.choices[0]
        assert c.message.content in options, c.message.content
        assert c.finish_reason == "stop"
        seen.add(c.message.content)
    # vLLM's older field name gives the same constraint
    r = chat(client, {"guided_choice": options}, seed=1)
    assert r.choices[0].message.content in options


PHONE = r"\(\d{3}\) \d{3}-\d{4}"


def test_regex_n_and_seeds(client):
    r = chat(client, {"guided_regex": PHONE}, n=4, seed=7)
    assert len(r.choices) == 4
    for c in r.choices:
        assert re.fullmatch(PHONE, c.message.content), c.message.content
        assert c.finish_reason == "stop"
    # the same seed gives the same outputs (the mask keeps sampling deterministic)
    r2 = chat(client, {"guided_regex": PHONE}, n=4, seed=7)
    assert [c.message.content for c in r.choices] == [c.message.content for c in r2.choices]


def test_regex_streamed_equals_unstreamed(client):
    extra = {"structured_outputs": {"regex": r"[a-z]{3,8}( [a-z]{3,8}){2,5}\."}}
    full = chat(client, extra, temperature=0).choices[0].message.content
    stream = chat(client, extra, temperature=0, stream=True)
    text, finish = "", None
    for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            text += ch.choices[0].delta.content
        if ch.choices and ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
    assert text == full
    assert finish == "stop"
    assert re.fullmatch(r"[a-z]{3,8}( [a-z]{3,8}){2,5}\.", text), text


GBNF = r'''
root ::= item (", " item){2,3}
item ::= color | "the number " [1-9] [0-9]?
color ::= "red" | "green" | "blue"
'''


def gbnf_ok(s):
    item = r"(red|green|blue|the number [1-9][0-9]?)"
    return re.fullmatch(item + r"(, " + item + r"){2,3}", s)


def test_gbnf_completions_and_chat(client):
    for seed in range(4):
        r = client.completions.create(model=NAME, prompt="Some items:", max_tokens=40, temperature=1.0, seed=seed,
                                      extra_body={"grammar": GBNF})
        assert gbnf_ok(r.choices[0].text), r.choices[0].text
        assert r.choices[0].finish_reason == "stop"
    r = chat(client, {"structured_outputs": {"grammar": GBNF}}, seed=3)
    assert gbnf_ok(r.choices[0].message.content), r.choices[0].message.content


def test_max_tokens_cuts_a_constrained_output(client):
    r = chat(client, {"guided_regex": "[a-z]+( [a-z]+)*"}, max_tokens=5, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert re.fullmatch("[a-z]+( [a-z]+)*", c.message.content)


def test_logprobs_are_the_models(client):
    """The mask decides what may be drawn; the logprobs reported are the model's own distribution."""
    r = chat(client, {"guided_choice": ["zebra", "yak"]}, temperature=0, logprobs=True, top_logprobs=3, max_tokens=8)
    lp = r.choices[0].logprobs.content
    assert lp and all(t.logprob <= 0 for t in lp)
    # the top alternatives of the first token are the model's favourites, not only the two allowed
    first_alts = {a.token for a in lp[0].top_logprobs}
    assert len(first_alts) == 3


def test_constrained_and_free_in_one_batch(client):
    def constrained(seed):
        r = chat(client, {"guided_regex": PHONE}, seed=seed)
        return re.fullmatch(PHONE, r.choices[0].message.content) is not None

    def free(seed):
        r = chat(client, {}, seed=seed, max_tokens=24)
        return r.choices[0].finish_reason in ("stop", "length")

    with cf.ThreadPoolExecutor(12) as ex:
        futs = [ex.submit(constrained if i % 2 else free, i) for i in range(12)]
        assert all(f.result() for f in futs)


@pytest.mark.parametrize("extra,param,words", [
    ({"guided_regex": "(a"}, "guided_regex", "unterminated"),
    ({"guided_regex": "a(?=b)"}, "guided_regex", "look"),
    ({"grammar": "root ::= foo"}, "grammar", "foo"),
    ({"grammar": 'root ::= "a'}, "grammar", "1:"),
    ({"structured_outputs": {"choice": []}}, "structured_outputs.choice", "non-empty"),
    ({"structured_outputs": {"choice": ["a", 1]}}, "structured_outputs.choice", "string"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs", "at most one"),
    ({"guided_regex": "a", "grammar": "root ::= \"a\""}, "", "at most one"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "yaml"),
    ({"structured_outputs": {"whitespace_pattern": " *"}}, "structured_outputs.whitespace_pattern", "not supported"),
    ({"structured_outputs": {"bogus": 1}}, "structured_outputs.bogus", "Unrecognized"),
])
def test_bad_constraints_are_400(client, extra, param, words):
    with pytest.raises(openai.BadRequestError) as ei:
        chat(client, extra)
    err = ei.value.body
    assert words in err["message"], err
    if param:
        assert err["param"].startswith(param), err


def test_hostile_regexes_are_bounded(client, server):
    """Patterns that make backtracking engines explode are automata here: answered within a
    bounded time (a nested quantifier), or refused clearly (a counted repeat too large to build)."""
    t0 = time.time()
    r = chat(client, {"guided_regex": "(a+)+b"}, max_tokens=12, temperature=0)
    assert re.fullmatch("(a+)+b", r.choices[0].message.content) or r.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError):
        chat(client, {"guided_regex": "((a{1000}){1000}){1000}"})
    assert time.time() - t0 < 60
    assert server.get("/health")[0] == 200


jsonschema = pytest.importorskip("jsonschema")

PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 20},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "born": {"type": "string", "format": "date"},
                         "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}},
          "required": ["name", "age"], "additionalProperties": False}


def test_json_schema_sampled_outputs_validate(client):
    ok = 0
    for seed in range(8):
        r = chat(client, None, seed=seed, max_tokens=200,
                 response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
        c = r.choices[0]
        if c.finish_reason == "length":
            continue
        assert c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.message.content), PERSON)
        ok += 1
    # outputs cut by max_tokens are not judged (a free string may run on at temperature 1); every
    # output that ended validates
    assert ok >= 2


def test_json_object_and_llama_cpp_field(client):
    r = chat(client, None, seed=2, max_tokens=60, response_format={"type": "json_object"})
    c = r.choices[0]
    if c.finish_reason == "stop":
        assert isinstance(json.loads(c.message.content), dict)
    else:
        assert c.message.content.startswith("{")
    r = client.completions.create(model=NAME, prompt="JSON:", max_tokens=60, temperature=1.0, seed=5,
                                  extra_body={"json_schema": {"type": "array", "items": {"type": "boolean"},
                                                              "minItems": 1, "maxItems": 4}})
    v = json.loads(r.choices[0].text)
    assert isinstance(v, list) and 1 <= len(v) <= 4 and all(isinstance(x, bool) for x in v)


@pytest.mark.parametrize("schema,words", [
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "integer", "multipleOf": 3}, "multipleOf"),
    ({"$ref": "#/$defs/missing"}, "missing"),
    ({"type": "string", "pattern": "a(?=b)"}, "look"),
])
def test_unsupported_schemas_are_400(client, schema, words):
    with pytest.raises(openai.BadRequestError) as ei:
        chat(client, None, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert words in ei.value.body["message"], ei.value.body


def test_hostile_schemas_bounded(client, server):
    """deep $ref cycles and a large schema: an answer (200 or a clear 400) in bounded time, and the
    server keeps serving."""
    cyc = {"$defs": {f"d{i}": {"$ref": f"#/$defs/d{(i + 1) % 200}"} for i in range(200)}, "$ref": "#/$defs/d0"}
    big = {"type": "object", "properties": {f"p{i}": {"type": "string", "pattern": f"^x{i}[a-z]*$"}
                                            for i in range(3000)}}
    for schema in (cyc, big):
        t0 = time.time()
        try:
            chat(client, None, max_tokens=8,
                 response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        except openai.BadRequestError as e:
            assert e.body["message"]
        assert time.time() - t0 < 60
    assert server.get("/health")[0] == 200
