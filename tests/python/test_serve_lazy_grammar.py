"""Lazy grammars through `pagoda serve`: text is free until a trigger appears in the output, and
from the trigger on it follows the grammar (llama.cpp's grammar_lazy / grammar_triggers; the
server's tool_choice "auto", where a call the model starts follows the tools' schemas).

To make the model write the trigger, logit_bias pushes the token "{" by +100 at every step: without
a grammar the output is "{{{{..." until max_tokens; with the lazy grammar the first "{" starts
it, the mask then allows no other "{" where the grammar does not, and the output is exactly one
sentence of the grammar. Checked with Python json / jsonschema (independent of the server)."""
import json
import subprocess

import pytest

from serve_harness import running

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def token_id(pagoda_bin, model, text):
    out = subprocess.run([pagoda_bin, "tokenize", "-m", str(model), "--ids", text], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


@pytest.fixture(scope="module")
def brace(pagoda_bin, builtin_model):
    return token_id(pagoda_bin, builtin_model, "{")


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2")


@pytest.fixture(scope="module")
def server_off(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2", "--auto-tool-grammar", "off")


def complete(server, **body):
    body = {"model": server.model_name, "prompt": "Write something:", "max_tokens": 48, "temperature": 1.0, **body}
    status, _, text = server.post("/v1/completions", body)
    return status, json.loads(text)


def test_lazy_grammar_starts_at_trigger(server, brace):
    for seed in range(3):
        status, r = complete(server, seed=seed, logit_bias={str(brace): 100}, json_schema=SCHEMA, grammar_lazy=True,
                             grammar_triggers=["{"])
        assert status == 200, r
        c = r["choices"][0]
        assert c["finish_reason"] == "stop", c
        jsonschema.validate(json.loads(c["text"]), SCHEMA)


def test_without_trigger_text_stays_free(server, brace):
    # the same bias and schema, but a trigger the output never contains: nothing is constrained
    status, r = complete(server, seed=1, logit_bias={str(brace): 100}, json_schema=SCHEMA, grammar_lazy=True,
                         grammar_triggers=[{"type": "word", "value": "@@@"}])
    assert status == 200, r
    c = r["choices"][0]
    assert c["finish_reason"] == "length" and c["text"].startswith("{{{{"), c


@pytest.mark.parametrize("body, param", [
    ({"grammar_lazy": True, "grammar_triggers": ["{"]}, "grammar_lazy"),        # no grammar
    ({"grammar_lazy": True, "json_schema": SCHEMA}, "grammar_lazy"),            # no triggers
    ({"grammar_lazy": "yes", "json_schema": SCHEMA}, "grammar_lazy"),
    ({"grammar_lazy": True, "json_schema": SCHEMA, "grammar_triggers": [""]}, "grammar_triggers"),
    ({"grammar_lazy": True, "json_schema": SCHEMA, "grammar_triggers": ["x" * 65]}, "grammar_triggers"),
    ({"grammar_lazy": True, "json_schema": SCHEMA, "grammar_triggers": ["a"] * 9}, "grammar_triggers"),
    ({"grammar_lazy": True, "json_schema": SCHEMA, "grammar_triggers": [{"type": "pattern", "value": "a+"}]},
     "grammar_triggers"),
    ({"grammar_lazy": True, "json_schema": SCHEMA, "grammar_triggers": "{"}, "grammar_triggers"),
])
def test_bad_lazy_fields_400(server, body, param):
    status, r = complete(server, **body)
    assert status == 400, r
    assert r["error"]["param"] == param, r


def chat(server, **kw):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=180)
    return c.chat.completions.create(model=server.model_name, messages=MESSAGES, tools=[ADD], max_tokens=96,
                                     temperature=1.0, **kw)


def test_auto_tool_call_follows_schema(server, server_off, brace):
    # tool_choice auto (the default) with the json tool format (the built-in template): a call the
    # model starts with "{" follows the tool's schema; with --auto-tool-grammar off the same
    # sampling gives no call
    for seed in range(3):
        c = chat(server, seed=seed, logit_bias={str(brace): 100}).choices[0]
        assert c.finish_reason == "tool_calls", c
        (call,) = c.message.tool_calls
        assert call.function.name == "add"
        jsonschema.validate(json.loads(call.function.arguments), ADD["function"]["parameters"])
        off = chat(server_off, seed=seed, logit_bias={str(brace): 100}).choices[0]
        assert not off.message.tool_calls and off.finish_reason == "length", off


def test_auto_free_text_unchanged(server, server_off):
    # without the trigger at the start, auto output is free text: the same tokens with and without
    # the lazy grammar (same seed)
    for seed in range(2):
        on = chat(server, seed=seed).choices[0]
        off = chat(server_off, seed=seed).choices[0]
        if not on.message.tool_calls:
            assert on.message.content == off.message.content
