"""The SDK's HTTP transport: the OpenAI-compatible and OS endpoints of a server, with retries on
429/503 and connection errors (`retries.py`) and server-sent events parsed by `httpx-sse`."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import EventSource, connect_sse

from llmasos.errors import LLMasOSError, error_from_wire
from llmasos.sdk.results import ChatCompletion, merge_tool_call_deltas
from llmasos.sdk.retries import RetryPolicy
from llmasos.sdk.stream import TextStream

_PATHS = {"chat": ("/v1/chat/completions", "messages"), "completion": ("/v1/completions", "prompt")}


class HTTPTransport:
    mode = "http"

    def __init__(
        self, base_url: str, api_key: str | None, timeout: float, retry: RetryPolicy | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def _raise_for(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            error = response.json()["error"]
            message, type_ = str(error.get("message")), error.get("type")
        except (ValueError, KeyError, TypeError, AttributeError):
            message, type_ = response.text[:500] or response.reason_phrase, None
        retry = float(response.headers.get("retry-after", "1") or 1)
        raise error_from_wire(type_, response.status_code, message, retry)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response, after up to `retry.max_retries` more tries on 429/503 or a connection error."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                wait = self.retry.delay(attempt)
                if wait is None:
                    raise LLMasOSError(f"cannot reach the LLMasOS server at {self.base_url}: {err}") from err
            else:
                wait = self.retry.delay(attempt, response) if not response.is_success else None
                if wait is None:
                    return response
            self.retry.sleep(wait)
            attempt += 1

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        self._raise_for(response)
        return response.json()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request to the server (retried as `_send` retries); its JSON answer, errors raised as
        their classes. The SDK's resource clients (workflows, documents, ...) go through it."""
        return self._request(method, path, **kwargs)

    def request_bytes(self, method: str, path: str, **kwargs: Any) -> bytes:
        """As `request`, for an answer that is not JSON (a file's content, a picture)."""
        response = self._send(method, path, **kwargs)
        self._raise_for(response)
        return response.content

    def stream_lines(self, method: str, path: str, **kwargs: Any) -> Iterator[str]:
        """The lines of a streamed answer (server-sent events) as they come."""
        try:
            with self._http.stream(method, path, timeout=None, **kwargs) as response:
                if not response.is_success:
                    response.read()
                    self._raise_for(response)
                yield from response.iter_lines()
        except httpx.HTTPError as err:
            raise LLMasOSError(f"cannot reach the LLMasOS server at {self.base_url}: {err}") from err

    def generate(self, kind: str, model: str, payload: Any, params: dict, stream: bool) -> str | TextStream:
        if stream:
            return self._text_stream(kind, model, payload, params)
        choice = self._request("POST", _PATHS[kind][0], json=self._body(kind, model, payload, params))
        choice = choice["choices"][0]
        return choice["message"]["content"] if kind == "chat" else choice["text"]

    def chat_completion(
        self, model: str, messages: list[dict], params: dict, stream: bool
    ) -> ChatCompletion | TextStream:
        if stream:
            return self._text_stream("chat", model, messages, params)
        response = self._send(
            "POST", "/v1/chat/completions", json=self._body("chat", model, messages, params)
        )
        self._raise_for(response)
        data = response.json()
        choice = data["choices"][0]
        message = choice.get("message") or {}
        pids = response.headers.get("x-llmasos-pids", "").split(",")
        return ChatCompletion(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason"),
            usage=data.get("usage"),
            tool_calls=list(message.get("tool_calls") or []),
            pid=int(pids[0]) if pids[0].isdigit() else None,
            raw=data,
        )

    @staticmethod
    def _body(kind: str, model: str, payload: Any, params: dict) -> dict:
        return {"model": model, _PATHS[kind][1]: payload, **params}

    def _text_stream(self, kind: str, model: str, payload: Any, params: dict) -> TextStream:
        body = {**self._body(kind, model, payload, params), "stream": True}
        body["stream_options"] = {"include_usage": True}
        return TextStream(lambda into: self._stream(_PATHS[kind][0], body, kind, into))

    @contextlib.contextmanager
    def _open_stream(self, path: str, body: dict) -> Iterator[EventSource]:
        """The event source of a successful response, retried as `_send` retries (only before any
        event was read: a stream that broke midway is not replayed)."""
        attempt = 0
        while True:
            with contextlib.ExitStack() as stack:
                try:
                    source = stack.enter_context(connect_sse(self._http, "POST", path, json=body))
                except httpx.TransportError as err:
                    wait = self.retry.delay(attempt)
                    if wait is None:
                        raise LLMasOSError(
                            f"cannot reach the LLMasOS server at {self.base_url}: {err}"
                        ) from err
                else:
                    response = source.response
                    if response.is_success:
                        yield source
                        return
                    response.read()
                    wait = self.retry.delay(attempt, response)
                    if wait is None:
                        self._raise_for(response)
            self.retry.sleep(wait)
            attempt += 1

    def _stream(self, path: str, body: dict, kind: str, into: TextStream) -> Iterator[str]:
        try:
            with self._open_stream(path, body) as source:
                pids = source.response.headers.get("x-llmasos-pids", "").split(",")
                into.pid = int(pids[0]) if pids[0].isdigit() else None
                for event in source.iter_sse():
                    if event.data == "[DONE]":
                        return
                    yield from _chunk_text(json.loads(event.data), kind, into)
        except httpx.HTTPError as err:
            raise LLMasOSError(f"the stream from {self.base_url} broke: {err}") from err

    def stream_events(self, path: str, body: dict) -> Iterator[dict]:
        """The JSON data of each server-sent event of a POST (retried as `_send` retries, before
        the first event only), e.g. the Responses API's typed events."""
        try:
            with self._open_stream(path, body) as source:
                for event in source.iter_sse():
                    if event.data == "[DONE]":
                        return
                    yield json.loads(event.data)
        except httpx.HTTPError as err:
            raise LLMasOSError(f"the stream from {self.base_url} broke: {err}") from err

    def preload(self, model: str) -> float | None:
        return None

    def call_service(self, name: str, input: Any, params: dict, model: str) -> dict:
        return self._request(
            "POST", f"/os/services/{name}", json={"input": input, "params": params, "model": model}
        )

    def ask(self, request: str, file: bytes | None, model: str) -> dict:
        body = {"request": request, "model": model}
        if file is not None:
            body["file_base64"] = base64.b64encode(file).decode("ascii")
        return self._request("POST", "/os/ask", json=body)

    def voice(self, wav: bytes, model: str) -> dict:
        body = {"audio_base64": base64.b64encode(wav).decode("ascii"), "model": model}
        return self._request("POST", "/os/voice", json=body)

    def embed(self, texts: list[str], model: str) -> list[list[float]]:
        data = self._request("POST", "/v1/embeddings", json={"model": model, "input": texts})["data"]
        return [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]

    def ps(self) -> list[dict]:
        return self._request("GET", "/os/ps")["processes"]

    def nodes(self) -> list[dict]:
        return self._request("GET", "/os/nodes")["nodes"]

    def models(self) -> list[dict]:
        return self._request("GET", "/os/models")["models"]

    def cancel(self, pid: int) -> dict:
        return self._request("DELETE", f"/os/tasks/{pid}")

    def close(self) -> None:
        self._http.close()


def _chunk_text(chunk: dict, kind: str, into: TextStream) -> Iterator[str]:
    """The text deltas of one streamed chunk; its usage, finish reason and tool calls go to `into`."""
    if "error" in chunk:
        e = chunk["error"]
        raise error_from_wire(e.get("type"), 500, str(e.get("message")))
    if chunk.get("usage"):
        into.usage = chunk["usage"]
    for choice in chunk.get("choices", []):
        if choice.get("finish_reason"):
            into.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        if delta.get("tool_calls"):
            merge_tool_call_deltas(into.tool_calls, delta["tool_calls"])
        text = delta.get("content") if kind == "chat" else choice.get("text")
        if text:
            yield text
