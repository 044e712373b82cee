"""`client.conversations` and `client.chat(..., conversation=ID)`: server-side conversations whose
context the system assembles (recent turns, a running summary, recalled turns, core facts), the
same over HTTP (OpenAI's Responses API) and in-process.

    conversation = client.conversations.create(core_memory=["The user is called Ada."])
    client.chat([{"role": "user", "content": "Hi"}], conversation=conversation["id"])
    for delta in client.chat([...], conversation=conversation["id"], stream=True): print(delta, end="")
    client.conversations.context(client.conversations.last_response_id)   # what went in, and why
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from llmasos.data.pages import PageRequest
from llmasos.errors import InvalidRequestError, LLMasOSError, error_from_wire
from llmasos.sdk.stream import TextStream, usage_of


class Conversations:
    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.last_response_id: str | None = None  # of the last chat() with a conversation

    def _local(self):
        return self._transport.system_calls() if self._transport.mode == "local" else None

    def create(self, *, metadata: dict | None = None, core_memory: list[str] | None = None) -> dict:
        if local := self._local():
            return local[0].create_conversation(local[1], metadata, None, core_memory)
        body = {"metadata": metadata, "core_memory": core_memory}
        return self._transport.request("POST", "/v1/conversations", json=body)

    def update(
        self, conversation_id: str, *, metadata: dict | None = None, core_memory: list[str] | None = None
    ) -> dict:
        if local := self._local():
            return local[0].update_conversation(local[1], conversation_id, metadata, core_memory)
        body = {"metadata": metadata, "core_memory": core_memory}
        return self._transport.request("POST", f"/v1/conversations/{conversation_id}", json=body)

    def delete(self, conversation_id: str) -> dict:
        if local := self._local():
            return local[0].delete_conversation(local[1], conversation_id)
        return self._transport.request("DELETE", f"/v1/conversations/{conversation_id}")

    def items(self, conversation_id: str, limit: int = 100) -> list[dict]:
        """The conversation's messages, oldest first (the first `limit`)."""
        if local := self._local():
            page = PageRequest(limit=limit, order="asc")
            return local[0].list_conversation_items(local[1], conversation_id, page)["data"]
        params = {"limit": limit, "order": "asc"}
        return self._transport.request("GET", f"/v1/conversations/{conversation_id}/items", params=params)[
            "data"
        ]

    def context(self, response_id: str) -> dict:
        """What went into the model's context for a response, block by block, and why."""
        if local := self._local():
            return local[0].response_context(local[1], response_id)
        return self._transport.request("GET", f"/os/responses/{response_id}/context")

    def respond(self, model: str, messages: list[dict], conversation: str, sampling: dict) -> str:
        """The reply to `messages` within the conversation; its response id in `last_response_id`."""
        fields = _fields(sampling)
        if local := self._local():
            body = _respond_locally(*local, model, messages, conversation, fields)
        else:
            payload = {"model": model, "input": messages, "conversation": conversation, **fields}
            body = self._transport.request("POST", "/v1/responses", json=payload)
        self.last_response_id = body["id"]
        return "".join(
            part["text"]
            for item in body["output"]
            for part in item["content"]
            if part["type"] == "output_text"
        )

    def stream(self, model: str, messages: list[dict], conversation: str, sampling: dict) -> TextStream:
        """The reply's text deltas as they are generated (`TextStream`); once it is read, the
        response id is in `last_response_id` (and the stream's `response_id`), with its usage and
        finish reason on the stream."""
        fields = _fields(sampling)
        if local := self._local():
            return TextStream(
                lambda into: self._local_deltas(*local, model, messages, conversation, fields, into)
            )
        payload = {"model": model, "input": messages, "conversation": conversation, "stream": True, **fields}
        return TextStream(lambda into: self._http_deltas(payload, into))

    def _http_deltas(self, payload: dict, into: TextStream) -> Iterator[str]:
        for event in self._transport.stream_events("/v1/responses", payload):
            kind = event.get("type", "")
            if kind == "response.output_text.delta":
                yield event["delta"]
            elif kind in ("response.completed", "response.incomplete"):
                self._finished(into, event["response"])
            elif kind == "response.failed":
                error = event["response"].get("error") or {}
                raise error_from_wire(error.get("code"), 500, str(error.get("message")))

    def _local_deltas(
        self, syscalls: Any, app: Any, model: str, messages: list, conversation: str, fields: dict, into
    ) -> Iterator[str]:
        from llmasos.services import responses as flow

        request = flow.ResponseRequest(model=model, input=messages, conversation=conversation, **fields)
        prepared = flow.prepare(syscalls, app, request)
        if not prepared.needs_model:
            yield prepared.fixed_text
            self._finished(into, flow.finish(syscalls, app, prepared, prepared.fixed_text, "stop", None))
            return
        process = flow.start(syscalls, app, prepared)
        into.pid = process.pid
        parts, reason, finished = [], None, False
        try:
            for event in syscalls.events(app, process.pid):
                if event.finished:
                    finished = True
                    if event.error is not None:
                        raise event.error
                    reason = event.finish_reason
                elif event.text:
                    parts.append(event.text)
                    yield event.text
        finally:
            if not finished:  # the reader stopped: give the engine back at once
                with contextlib.suppress(LLMasOSError):
                    syscalls.cancel(app, process.pid, reason="the reader stopped")
        self._finished(into, flow.finish(syscalls, app, prepared, "".join(parts), reason, process))

    def _finished(self, into: TextStream, body: dict) -> None:
        self.last_response_id = into.response_id = body["id"]
        usage = body.get("usage") or {}
        into.usage = usage_of(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        into.finish_reason = "length" if body["status"] == "incomplete" else "stop"


def _fields(sampling: dict) -> dict:
    """The Responses API's fields for the SDK's sampling keywords; others are refused by name."""
    sampling = dict(sampling)
    fields = {
        "max_output_tokens": sampling.pop("max_tokens", None),
        **{k: sampling.pop(k) for k in ("temperature", "top_p", "seed", "priority") if k in sampling},
    }
    if sampling:
        raise InvalidRequestError(
            f"{', '.join(sorted(sampling))} cannot be used with a conversation; use max_tokens, "
            "temperature, top_p, seed or priority"
        )
    return fields


def _respond_locally(
    syscalls: Any, app: Any, model: str, messages: list, conversation: str, fields: dict
) -> dict:
    from llmasos.services import responses as flow

    request = flow.ResponseRequest(model=model, input=messages, conversation=conversation, **fields)
    return flow.respond(syscalls, app, request)[0]
