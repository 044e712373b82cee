"""`TextStream`: the text deltas of one streamed generation, and what is known of it once read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class TextStream(Iterator[str]):
    """Iterate it for the reply's text deltas. `pid` is the kernel's process behind the reply (for
    `Client.cancel`, `llmasos ps`) once the stream has started; `usage` (`prompt_tokens`,
    `completion_tokens`, `total_tokens`), `finish_reason` and `tool_calls` (OpenAI's shape, pieces
    joined) once it has been read to its end. `close()` before the end cancels the process."""

    def __init__(self, make: Callable[[TextStream], Iterator[str]]) -> None:
        self.pid: int | None = None
        self.usage: dict[str, int] | None = None
        self.finish_reason: str | None = None
        self.tool_calls: list[dict[str, Any]] = []
        self.response_id: str | None = None  # a conversation's reply: its stored response
        self._deltas = make(self)

    def __next__(self) -> str:
        return next(self._deltas)

    def close(self) -> None:
        close = getattr(self._deltas, "close", None)
        if close is not None:
            close()


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
