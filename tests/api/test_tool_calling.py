"""Tool calling as agents use it, through the official client on the tiny random model: schemas
checked on arrival, every tool_choice, parallel calls, streamed calls, the tool-result round trip
and the legacy `functions`. A random model picks at random, so each check either forces the choice
or asserts what the grammar allowed, over fixed seeds."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The current weather in a city", "parameters": CITY},
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The local time in a city", "parameters": CITY},
}
ASK = [{"role": "user", "content": "What's the weather in Paris and in Tokyo?"}]
SEEDS = range(6)
MAX_PARALLEL_CALLS = 4  # llmasos.services.function_calling.MAX_PARALLEL_CALLS


@pytest.fixture
def client(long_tiny_server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=long_tiny_server.url + "/v1", api_key=long_tiny_server.admin_key, max_retries=0
    )


def _checked(calls) -> list[tuple[str, dict]]:
    """(name, arguments) of each call, after checking its shape and its arguments' schema."""
    out = []
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, CITY)
        out.append((call.function.name, arguments))
    assert len({call.id for call in calls}) == len(calls)
    return out


def test_every_tool_schema_is_checked_when_the_request_arrives(tiny_server):
    http = tiny_server.client()
    bad = {
        **TIME,
        "function": {**TIME["function"], "parameters": {"type": "object", "patternProperties": {}}},
    }
    for extra in ({}, {"tool_choice": "auto"}, {"tool_choice": "none"}, {"stream": True}):
        body = {"model": "tiny", "messages": ASK, "tools": [WEATHER, bad], **extra}
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, (extra, r.text)
        assert "tools[1].function.parameters" in r.json()["error"]["message"]
    legacy = {"name": "get_time", "parameters": {"type": "object", "properties": {"x": {"type": "tuple"}}}}
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, "functions": [legacy]})
    assert r.status_code == 400 and "functions[0].parameters/properties/x" in r.json()["error"]["message"]
    for choice, words in (
        ({"type": "function", "function": {"name": "teleport"}}, "'teleport', which is not among the tools"),
        ("required", "no tools"),
    ):
        body = {"model": "tiny", "messages": ASK, "tool_choice": choice}
        if not isinstance(choice, str):
            body["tools"] = [WEATHER]
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and words in r.json()["error"]["message"], r.text


def test_each_tool_choice_is_obeyed_and_parallel_false_makes_exactly_one_call(client):
    for seed in SEEDS:
        ask = {"model": "tiny", "messages": ASK, "tools": [WEATHER, TIME], "seed": seed, "temperature": 1.0}
        reply = client.chat.completions.create(**ask, tool_choice="required")
        assert reply.choices[0].finish_reason == "tool_calls" and reply.choices[0].message.content is None
        assert 1 <= len(_checked(reply.choices[0].message.tool_calls)) <= MAX_PARALLEL_CALLS
        (one,) = client.chat.completions.create(
            **ask, tool_choice="required", parallel_tool_calls=False
        ).choices
        assert len(_checked(one.message.tool_calls)) == 1
        named = client.chat.completions.create(
            **ask, tool_choice={"type": "function", "function": {"name": "get_time"}}
        )
        assert {name for name, _ in _checked(named.choices[0].message.tool_calls)} == {"get_time"}


def test_several_calls_in_one_turn_stream_as_openai_streams_them(client):
    # Tools named "do" and "d": after a call, the random model's pick among "do", "d" and "done"
    # falls on another call at most seeds (fixed seeds, so always the same), so the several-calls
    # path runs; the grammar bounds it at MAX_PARALLEL_CALLS.
    tools = [
        {"type": "function", "function": {**t["function"], "name": n}}
        for t, n in ((WEATHER, "do"), (TIME, "d"))
    ]
    counts = []
    for seed in range(4):
        ask = {"model": "tiny", "messages": ASK, "tools": tools, "seed": seed, "temperature": 2.0}
        reply = client.chat.completions.create(**ask, tool_choice="required")
        calls = _checked(reply.choices[0].message.tool_calls)
        assert 1 <= len(calls) <= MAX_PARALLEL_CALLS and {n for n, _ in calls} <= {"do", "d"}
        assert len({json.dumps(call) for call in calls}) == len(calls)  # a repeated call ends the turn
        counts.append(len(calls))
        # Streamed, assembled as the SDK's helper does: the same calls as the same seed not streamed.
        with client.chat.completions.stream(**ask, tool_choice="required") as stream:
            chunks = [event.chunk for event in stream if event.type == "chunk"]
            streamed = stream.get_final_completion().choices[0]
        assert streamed.finish_reason == "tool_calls" and streamed.message.content is None
        assert _checked(streamed.message.tool_calls) == calls
        starts = [d for c in chunks for d in c.choices[0].delta.tool_calls or () if d.id is not None]
        assert [(d.index, d.type, d.function.name) for d in starts] == [
            (i, "function", name) for i, (name, _) in enumerate(calls)
        ]
        fragments = [d for c in chunks for d in c.choices[0].delta.tool_calls or () if d.id is None]
        assert fragments and all(d.function.name is None for d in fragments)
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert max(counts) > 1, counts


def _round_trip(question: str, result: str) -> list[dict]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]


def test_after_tool_results_auto_answers_in_text_streamed_as_it_comes(client):
    pieces = []
    # The random model's answers are mostly broken characters, which the detokenizer holds back
    # until the end (an answer of them comes as one piece, streamed or not); in some conversations
    # it writes whole ones, and those must come piece by piece.
    conversations = [(ASK[0]["content"], '{"temp": 18}'), ("Hi", "18"), ("x", "1"), ("hello", "ok")]
    for history in (_round_trip(question, result) for question, result in conversations):
        for seed in range(2):
            ask = {"model": "tiny", "messages": history, "tools": [WEATHER], "seed": seed, "temperature": 1.0}
            reply = client.chat.completions.create(**ask, max_tokens=12)
            (choice,) = reply.choices
            assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
            assert isinstance(choice.message.content, str) and "Calling" not in choice.message.content
            *chunks, last = client.chat.completions.create(
                **ask, max_tokens=12, stream=True, stream_options={"include_usage": True}
            )
            texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
            assert "".join(texts) == choice.message.content  # the same answer, in pieces
            assert chunks[0].choices[0].delta.role == "assistant"
            assert chunks[-1].choices[0].finish_reason == choice.finish_reason
            assert not any(c.choices[0].delta.tool_calls for c in chunks)
            assert not last.choices and last.usage == reply.usage
            pieces.append(len(texts))
    assert max(pieces) > 1, pieces  # deltas as they are generated, not the whole answer at once


def test_legacy_functions_are_answered_with_function_call(client):
    reply = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        functions=[WEATHER["function"], TIME["function"]],
        function_call={"name": "get_weather"},
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "function_call" and not choice.message.tool_calls
    assert choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), CITY)
