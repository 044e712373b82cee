"""`client.conversations` and `client.chat(..., conversation=ID)`: server-side conversations whose
context the system assembles (recent turns, a running summary, recalled turns, core facts), the
same over HTTP (OpenAI's Responses API) and in-process.

    conversation = client.conversations.create(core_memory=["The user is called Ada."])
    client.chat([{"role": "user", "content": "Hi"}], conversation=conversation["id"])
    client.conversations.context(client.conversations.last_response_id)   # what went in, and why
"""

from __future__ import annotations

from typing import Any

from llmasos.data.pages import PageRequest
from llmasos.errors import InvalidRequestError


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
        fields = {
            "max_output_tokens": sampling.pop("max_tokens", None),
            **{k: sampling.pop(k) for k in ("temperature", "top_p", "seed", "priority") if k in sampling},
        }
        if sampling:
            raise InvalidRequestError(
                f"{', '.join(sorted(sampling))} cannot be used with a conversation; use max_tokens, "
                "temperature, top_p, seed or priority"
            )
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


def _respond_locally(
    syscalls: Any, app: Any, model: str, messages: list, conversation: str, fields: dict
) -> dict:
    from llmasos.services import responses as flow

    request = flow.ResponseRequest(model=model, input=messages, conversation=conversation, **fields)
    return flow.respond(syscalls, app, request)[0]
