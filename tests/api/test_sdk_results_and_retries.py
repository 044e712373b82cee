"""The SDK's `chat_completion` result (text, finish reason, usage, tool calls) and its retries on
429/503 and connection errors, honouring Retry-After (issue 22, item 7).

Retries are checked against scripted responses through httpx's own `MockTransport` (a real server
cannot be made to answer 503 twice and then 200 on cue); results against a real server on the tiny
model.
"""

from __future__ import annotations

import json

import httpx
import pytest

import llmasos
from llmasos.errors import InvalidRequestError, LLMasOSError, ModelUnavailableError, QuotaExceededError
from llmasos.sdk.retries import RetryPolicy

MESSAGES = [{"role": "user", "content": "hello"}]
REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}


def error(status: int, headers: dict | None = None) -> httpx.Response:
    kind = {429: "quota_exceeded", 503: "model_unavailable"}.get(status, "invalid_request")
    return httpx.Response(status, json={"error": {"message": "not now", "type": kind}}, headers=headers)


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(RetryPolicy, "sleep", staticmethod(waits.append))
    return waits


def scripted(responses: list, max_retries: int = 2) -> tuple[llmasos.Client, list[httpx.Request]]:
    """A client whose requests get `responses` in turn (an exception is raised instead of answering)."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    client = llmasos.Client("http://llmasos.test", "lmos-key", max_retries=max_retries)
    client._transport._http = httpx.Client(
        base_url="http://llmasos.test", transport=httpx.MockTransport(answer)
    )
    return client, seen


def test_503_and_429_are_retried_honouring_retry_after(slept):
    client, seen = scripted([error(503, {"Retry-After": "2"}), error(429), httpx.Response(200, json=REPLY)])
    result = client.chat_completion(MESSAGES)
    assert len(seen) == 3 and json.loads(seen[0].content)["messages"] == MESSAGES
    assert slept[0] == 2.0 and 0.25 <= slept[1] <= 1.0  # the second: backoff 1 s with jitter
    assert result.tool_calls[0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert result.finish_reason == "tool_calls" and result.usage["total_tokens"] == 12
    assert result.text == "" and result.raw == REPLY


def test_retries_stop_at_max_retries_and_raise_the_servers_error(slept):
    client, seen = scripted([error(503)] * 3)
    with pytest.raises(ModelUnavailableError):
        client.chat(MESSAGES)
    assert len(seen) == 3 and len(slept) == 2
    assert 0.375 <= slept[0] <= 0.5 and 0.75 <= slept[1] <= 1.0  # exponential: 0.5 s, then 1 s
    client, seen = scripted([error(503)], max_retries=0)
    with pytest.raises(ModelUnavailableError):
        client.chat(MESSAGES)
    assert len(seen) == 1


def test_a_retry_after_past_a_minute_and_client_errors_are_not_retried(slept):
    client, seen = scripted([error(429, {"Retry-After": "120"})])
    with pytest.raises(QuotaExceededError):
        client.chat(MESSAGES)
    client, seen = scripted([error(400)])
    with pytest.raises(InvalidRequestError):
        client.chat(MESSAGES)
    assert len(seen) == 1 and slept == []


def test_connection_errors_are_retried(slept):
    refused = httpx.ConnectError("connection refused")
    client, seen = scripted([refused, refused, httpx.Response(200, json=REPLY)])
    assert client.chat_completion(MESSAGES).finish_reason == "tool_calls"
    client, seen = scripted([refused] * 3)
    with pytest.raises(LLMasOSError, match="cannot reach"):
        client.chat(MESSAGES)
    assert len(seen) == 3


def test_a_stream_is_retried_before_it_starts_and_parsed_with_its_tool_calls(slept):
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}}
            ]
        },
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}}
            ]
        },
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 2}"}}]}}
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    stream_reply = httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    client, seen = scripted([error(503, {"Retry-After": "0"}), stream_reply])
    stream = client.chat_completion(MESSAGES, stream=True)
    assert "".join(stream) == "Hello" and len(seen) == 2 and slept == [0.0]
    assert stream.finish_reason == "tool_calls" and stream.usage["total_tokens"] == 7
    assert stream.tool_calls == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 2}'}}
    ]


@pytest.mark.parametrize("local", [False, True])
def test_chat_completion_against_a_real_server_and_in_process(tiny_server, local):
    client = (
        llmasos.Client(model="tiny", local=True)
        if local
        else llmasos.Client(tiny_server.url, tiny_server.admin_key)
    )
    with client:
        args = {"model": "tiny", "max_tokens": 4, "temperature": 0}
        result = client.chat_completion(MESSAGES, **args)
        assert result.text == client.chat(MESSAGES, **args) == str(result)
        assert result.finish_reason == "length" and result.usage["completion_tokens"] == 4
        assert result.tool_calls == [] and result.pid is not None
        stream = client.chat_completion(MESSAGES, stream=True, **args)
        assert "".join(stream) == result.text
        assert stream.finish_reason == "length" and stream.usage == result.usage
        if local:
            with pytest.raises(InvalidRequestError, match="tools need a server"):
                client.chat_completion(MESSAGES, tools=[{"type": "function", "function": {"name": "f"}}])
