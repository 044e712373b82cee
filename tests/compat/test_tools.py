"""Tool calling through the clients agents use, against the real server on the real default model:
the official `openai` package (tools streamed and not, every tool_choice, parallel calls, the
tool-result round trip), LangChain's `bind_tools` (invoke and stream), and instructor's TOOLS mode.

The 135M model does not reliably pick a tool or make several calls of its own accord, so each check
forces what it asserts (a required or named choice) and asserts what the grammar allowed: the calls'
names, their count within the bounds, and arguments valid under their schemas."""

from __future__ import annotations

import json

import instructor
import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30, "description": "the city's name"}},
    "required": ["city"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The current weather in a city", "parameters": CITY},
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The local time in a city", "parameters": CITY},
}
PARIS = [{"role": "user", "content": "What's the weather in Paris?"}]
PARIS_AND_TOKYO = [{"role": "user", "content": "What's the weather in Paris and in Tokyo?"}]
MAX_PARALLEL_CALLS = 4  # llmasos.services.function_calling.MAX_PARALLEL_CALLS


@pytest.fixture(scope="module")
def key(compat_server) -> str:
    return compat_server.new_app_key("compat-tools")


@pytest.fixture(scope="module")
def client(compat_server, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=compat_server.openai_url, api_key=key, max_retries=0)


def _valid(calls, names: set[str]) -> list[tuple[str, dict]]:
    out = []
    for call in calls:
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, CITY)
        assert call.type == "function" and call.id and call.function.name in names
        out.append((call.function.name, arguments))
    assert len({c.id for c in calls}) == len(calls)
    return out


def test_openai_tools_required_and_named_streamed_and_not(client):
    ask = {"model": "default", "messages": PARIS, "tools": [WEATHER, TIME], "temperature": 0}
    (choice,) = client.chat.completions.create(
        **ask, tool_choice="required", parallel_tool_calls=False
    ).choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = _valid(choice.message.tool_calls, {"get_weather", "get_time"})
    named = {"type": "function", "function": {"name": "get_time"}}
    (choice,) = client.chat.completions.create(**ask, tool_choice=named, parallel_tool_calls=False).choices
    assert _valid(choice.message.tool_calls, {"get_time"})[0][0] == "get_time"
    # Streamed, the deltas assembled by the SDK's own helper: the same call as not streamed (greedy).
    with client.chat.completions.stream(**ask, tool_choice="required", parallel_tool_calls=False) as stream:
        final = stream.get_final_completion().choices[0]
    assert final.finish_reason == "tool_calls"
    assert _valid(final.message.tool_calls, {"get_weather", "get_time"}) == [call]


def test_openai_parallel_calls_are_several_valid_calls_or_one_when_not_allowed(client):
    ask = {"model": "default", "messages": PARIS_AND_TOKYO, "tools": [WEATHER], "tool_choice": "required"}
    (choice,) = client.chat.completions.create(**ask, temperature=0).choices
    calls = _valid(choice.message.tool_calls, {"get_weather"})
    assert 1 <= len(calls) <= MAX_PARALLEL_CALLS and choice.finish_reason == "tool_calls"
    (one,) = client.chat.completions.create(**ask, temperature=0, parallel_tool_calls=False).choices
    assert len(_valid(one.message.tool_calls, {"get_weather"})) == 1


def test_openai_tool_result_round_trip_is_answered_in_text(client):
    history = [
        *PARIS,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_celsius": 18, "sky": "sunny"}'},
    ]
    reply = client.chat.completions.create(
        model="default", messages=history, tools=[WEATHER], temperature=0, max_tokens=40
    )
    (choice,) = reply.choices
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert choice.message.content and "Calling" not in choice.message.content


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


def test_langchain_bind_tools_invoke_and_stream(compat_server, key):
    model = ChatOpenAI(
        model="default", base_url=compat_server.openai_url, api_key=key, temperature=0, max_retries=0
    )
    bound = model.bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False)
    message = bound.invoke("What's the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]
    streamed = None
    for chunk in bound.stream("What's the weather in Paris?"):
        assert isinstance(chunk, AIMessageChunk)
        streamed = chunk if streamed is None else streamed + chunk
    (streamed_call,) = streamed.tool_calls
    assert (streamed_call["name"], streamed_call["args"]) == (call["name"], call["args"])


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):
    name: str
    age: int
    address: Address


def test_instructor_tools_mode_parses_a_nested_model(compat_server, key):
    client = instructor.from_openai(
        openai.OpenAI(base_url=compat_server.openai_url, api_key=key, max_retries=0),
        mode=instructor.Mode.TOOLS,
    )
    try:
        person = client.chat.completions.create(
            model="default",
            response_model=Person,
            messages=[{"role": "user", "content": "Ada Lovelace, 36, lives in London, England."}],
            max_retries=0,
            temperature=0,
        )
    except Exception as err:  # instructor wraps the server's 400 in errors of its own
        if "the JSON schema is not usable" in str(err):  # $defs/$ref: the structured-output work (h1)
            pytest.skip(f"the server does not take pydantic's nested schemas yet: {err}")
        raise
    assert isinstance(person, Person) and isinstance(person.address, Address)
    assert person.name and isinstance(person.age, int) and person.address.city
