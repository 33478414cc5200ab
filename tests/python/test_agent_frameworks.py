"""Agent frameworks, unchanged, against `pagoda serve` (the built-in SmolLM2-135M-Instruct):
LangChain (`bind_tools`, `with_structured_output` in json_schema, json_mode and function_calling
modes), instructor (TOOLS and JSON_SCHEMA modes) and pydantic-ai (`output_type` through its tool
output and its native structured output) each get validated objects back. The frameworks build
their own requests (tools, tool_choice, response_format, parallel_tool_calls); pagoda's grammar
makes a 135M model's answers parse. json_mode only asks for "a JSON object", so its prompt shows
the format twice (few-shot), as its users must. Each framework is skipped when not installed
(scripts/requirements-test.txt installs them)."""
import json

import pytest
from pydantic import BaseModel, Field

from serve_harness import running


class Person(BaseModel):
    """A person mentioned in the text."""
    name: str = Field(description="the person's first name", max_length=40)
    age: int = Field(description="age in years", ge=0, le=150)


class Weather(BaseModel):
    """Get the current weather in a city."""
    city: str = Field(max_length=40)


TEXT = "Carol is 25 years old and lives in Oslo."
SHOTS = [("Alice is 30 years old.", {"name": "Alice", "age": 30}), ("Bob is 41 years old.", {"name": "Bob", "age": 41})]


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2")


@pytest.fixture(scope="module")
def hermes_server(pagoda_bin, hermes_model):
    yield from running(pagoda_bin, hermes_model, "--kv-mem", "256M", "-t", "2")


def check_person(p):
    assert isinstance(p, Person), p
    assert p.name and 0 <= p.age <= 150


# ----- LangChain -----

def lc_chat(s, **kw):
    lc = pytest.importorskip("langchain_openai")
    return lc.ChatOpenAI(model=s.model_name, base_url=s.url + "/v1", api_key="unused", temperature=0, max_retries=0,
                         timeout=180, max_tokens=200, **kw)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(server, method):
    p = lc_chat(server).with_structured_output(Person, method=method).invoke(f"Extract the person: {TEXT}")
    check_person(p)


def test_langchain_with_structured_output_json_mode(server):
    from langchain_core.messages import AIMessage, HumanMessage
    msgs = []
    for q, a in SHOTS:
        msgs += [HumanMessage(f"Extract the person as JSON: {q}"), AIMessage(json.dumps(a))]
    msgs.append(HumanMessage(f"Extract the person as JSON: {TEXT}"))
    p = lc_chat(server).with_structured_output(Person, method="json_mode").invoke(msgs)
    check_person(p)


def test_langchain_bind_tools(server, hermes_server):
    # tool_choice "required" ("any" in LangChain): a call, whatever the model's habits
    m = lc_chat(server).bind_tools([Weather], tool_choice="any").invoke("What is the weather in Paris?")
    assert m.tool_calls and m.tool_calls[0]["name"] == "Weather"
    Weather(**m.tool_calls[0]["args"])
    # auto on a template that renders tools (hermes), with two earlier calls in the history (as
    # test_serve_tools shows them): the model's own choice to call, parsed from its <tool_call> block
    from langchain_core.messages import AIMessage, HumanMessage
    msgs = []
    for i, c in enumerate(["Paris", "Rome"]):
        msgs += [HumanMessage(f"What is the weather in {c}?"),
                 AIMessage("", tool_calls=[{"name": "Weather", "args": {"city": c}, "id": f"call_{i}"}])]
    msgs.append(HumanMessage("What is the weather in London?"))
    m = lc_chat(hermes_server).bind_tools([Weather]).invoke(msgs)
    assert m.tool_calls and m.tool_calls[0]["name"] == "Weather", m
    assert Weather(**m.tool_calls[0]["args"]).city


# ----- instructor -----

@pytest.mark.parametrize("mode", ["TOOLS", "JSON_SCHEMA"])
def test_instructor(server, mode):
    instructor = pytest.importorskip("instructor")
    openai = pytest.importorskip("openai")
    base = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=180)
    client = instructor.from_openai(base, mode=getattr(instructor.Mode, mode))
    p = client.chat.completions.create(model=server.model_name, response_model=Person, max_retries=0, temperature=0,
                                       max_tokens=200, messages=[{"role": "user", "content": f"Extract: {TEXT}"}])
    check_person(p)


# ----- pydantic-ai -----

def pai_agent(s, output_type):
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    model = OpenAIChatModel(s.model_name, provider=OpenAIProvider(base_url=s.url + "/v1", api_key="unused"))
    return Agent(model, output_type=output_type, retries=0,
                 model_settings={"temperature": 0, "max_tokens": 200, "timeout": 180})


def test_pydantic_ai_tool_output(server):
    r = pai_agent(server, Person).run_sync(f"Extract the person: {TEXT}")
    check_person(r.output)


def test_pydantic_ai_native_output(server):
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import NativeOutput
    r = pai_agent(server, NativeOutput(Person)).run_sync(f"Extract the person: {TEXT}")
    check_person(r.output)
