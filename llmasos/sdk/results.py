"""`ChatCompletion`: a whole chat reply as `Client.chat_completion` returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatCompletion:
    """The reply's text, why it ended (`stop`, `length`, `tool_calls`, ...), the tokens it took
    (`prompt_tokens`, `completion_tokens`, `total_tokens`) and the tools it called, each as OpenAI
    spells one: `{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}`."""

    text: str
    finish_reason: str | None
    usage: dict[str, int] | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    pid: int | None = None  # the kernel's process that answered (None when the server did not say)
    raw: dict[str, Any] | None = None  # the server's whole JSON reply (HTTP, not streamed)

    def __str__(self) -> str:
        return self.text


def merge_tool_call_deltas(calls: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Fold streamed `delta.tool_calls` pieces into whole calls: by `index`, the id, type and name
    as they come, the arguments' text appended."""
    for delta in deltas:
        index = delta.get("index", len(calls))
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]
