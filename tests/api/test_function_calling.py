"""Function calling through the official client: the call's arguments always match the schema."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 30}},
            "required": ["zone"],
        },
    },
}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture
def client(long_tiny_server) -> openai.OpenAI:
    server = long_tiny_server
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin_key, max_retries=0)


@pytest.mark.parametrize("seed", range(6))
def test_required_calls_are_always_valid_even_from_a_random_model(client, seed):
    reply = client.chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER, TIME], tool_choice="required", seed=seed, temperature=1.0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    schema = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)
    assert call.id.startswith("call_") and call.type == "function"


def test_a_named_tool_choice_calls_that_function(client):
    reply = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    jsonschema.validate(json.loads(call.function.arguments), TIME["function"]["parameters"])


def test_auto_either_calls_or_answers_and_streams_the_same_shape(client):
    for seed in range(4):
        reply = client.chat.completions.create(
            model="tiny", messages=ASK, tools=[WEATHER], seed=seed, max_tokens=5
        )
        choice = reply.choices[0]
        if choice.finish_reason == "tool_calls":
            json.loads(choice.message.tool_calls[0].function.arguments)
        else:
            assert isinstance(choice.message.content, str)
    stream = client.chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER], tool_choice="required", stream=True
    )
    chunks = list(stream)
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls and calls[0][0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_conversation_with_tool_results_continues(client):
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
    ]
    reply = client.chat.completions.create(
        model="tiny", messages=history, tools=[WEATHER], tool_choice="none", max_tokens=4
    )
    assert reply.choices[0].message.content is not None and reply.choices[0].finish_reason == "length"


def test_bad_tool_definitions_are_4xx(long_tiny_server):
    client = long_tiny_server.client()
    body = {
        "model": "tiny",
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "nope"}},
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    bad = {
        **WEATHER,
        "function": {
            **WEATHER["function"],
            "parameters": {"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}},
        },
    }
    r = client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": ASK, "tools": [bad], "tool_choice": "required"},
    )
    assert 400 <= r.status_code < 500, r.text
