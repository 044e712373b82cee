"""`response_format` over HTTP on the tiny random model: whatever it wants to write, the answer parses,
validates under the schema the client sent, and ends with finish_reason "stop"; a bad schema is a 400
naming its path before any generation."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 130}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
    "$defs": {"tag": {"enum": ["a", "b", 3]}},
}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "person", "schema": SCHEMA, "strict": True},
}


@pytest.fixture
def client(tiny_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key=tiny_server.admin_key, max_retries=0)


def _post(server, path: str, body: dict) -> httpx.Response:
    return server.client().post(path, json={"model": "tiny", **body})


def test_chat_and_completions_answer_valid_json_streamed_or_not(client) -> None:
    messages = [{"role": "user", "content": "write prose, not JSON"}]
    hot = {"model": "tiny", "temperature": 1.5, "max_tokens": 120, "seed": 3}
    reply = client.chat.completions.create(messages=messages, response_format=JSON_SCHEMA_FORMAT, n=3, **hot)
    for choice in reply.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)
    assert reply.usage.completion_tokens <= 3 * 120
    chunks = list(
        client.chat.completions.create(
            messages=messages, response_format=JSON_SCHEMA_FORMAT, stream=True, **hot
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    done = client.completions.create(prompt="x", extra_body={"response_format": JSON_SCHEMA_FORMAT}, **hot)
    assert done.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(done.choices[0].text), SCHEMA)
    streamed = client.completions.create(
        prompt="x", stream=True, extra_body={"response_format": {"type": "json_object"}}, **hot
    )
    assert isinstance(json.loads("".join(c.choices[0].text for c in streamed if c.choices)), dict)


def test_json_object_answers_an_object_and_takes_a_schema(client) -> None:
    args = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.5, "seed": 5}
    reply = client.chat.completions.create(response_format={"type": "json_object"}, max_tokens=100, **args)
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    without_max_tokens = client.chat.completions.create(response_format={"type": "json_object"}, **args)
    assert isinstance(json.loads(without_max_tokens.choices[0].message.content), dict)
    with_schema = client.chat.completions.create(
        response_format={"type": "json_object", "schema": SCHEMA},
        max_tokens=120,
        **args,  # type: ignore[typeddict-unknown-key]
    )
    jsonschema.validate(json.loads(with_schema.choices[0].message.content), SCHEMA)
    text = client.chat.completions.create(response_format={"type": "text"}, max_tokens=5, **args)
    assert text.choices[0].finish_reason == "length"  # no constraint: the random model rambles


@pytest.mark.parametrize(
    ("response_format", "status", "says"),
    [
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"not": {}}}}},
            },
            400,
            "at response_format.json_schema.schema/properties/a/not: keyword 'not'",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(?=a)"}},
            },
            400,
            "at response_format.json_schema.schema/pattern: the grammar engine cannot compile it",
        ),
        (
            {"type": "json_object", "schema": {"$ref": "#/$defs/nope"}},
            400,
            "at response_format.schema/$ref: '#/$defs/nope' points at nothing",
        ),
        ({"type": "json_schema"}, 400, "response_format.json_schema is missing"),
        ({"type": "yaml"}, 422, "response_format.type"),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "string", "minLength": 50}},
            },
            400,
            "set max_tokens to at least 203",
        ),
    ],
)
def test_bad_response_formats_are_refused_naming_the_field(
    tiny_server, response_format, status, says
) -> None:
    r = _post(
        tiny_server,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 20,
            "response_format": response_format,
        },
    )
    assert r.status_code == status, r.text
    assert says in json.dumps(r.json()), r.text
    assert not tiny_server.syscalls.kernel.table  # nothing ran


def test_response_format_with_tools_is_refused(tiny_server) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [tool],
        "response_format": {"type": "json_object"},
    }
    r = _post(tiny_server, "/v1/chat/completions", body)
    assert r.status_code == 400 and "cannot be combined with tools" in r.text
