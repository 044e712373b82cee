"""Streaming detokenization: token ids in, text deltas out, with stop strings.

Decoding one token at a time is wrong in two ways: a character may be split over several byte
tokens (its first token alone decodes to U+FFFD), and SentencePiece decoders strip the leading space
of whatever they decode first. So, like vLLM and transformers' TextStreamer, we decode a short window
``ids[prefix_offset:]`` and emit only what it adds over ``ids[prefix_offset:read_offset]``: both
decodes see the same first token, so they treat its space the same way, and the window stays a few
tokens long instead of the whole output. Text whose decode ends in U+FFFD waits for the next token.

Stop strings: the longest tail of the text that could still be the start of a stop string is held
back. A stop string counts as soon as it is complete (the one that ends first; among those ending at
the same character, the longest); the text before it is emitted and nothing after it ever is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

_REPLACEMENT = "\ufffd"


class _Decoder(Protocol):
    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Turns one sequence's generated token ids into text deltas for streaming."""

    def __init__(
        self,
        tokenizer: _Decoder,
        *,
        stop_strings: Iterable[str] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        # Empty stop strings would match everywhere; they mean "no stop string".
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stop_strings if s))
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the decode window
        self._read_offset = 0  # ids before this have had their text produced
        self._pending = ""  # produced text held back because it may begin a stop string
        self._emitted: list[str] = []
        self.stopped = False
        self.matched_stop: str | None = None

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self._emitted)

    @property
    def token_ids(self) -> list[int]:
        """Every id added so far (a copy)."""
        return list(self._ids)

    def add(self, token_id: int) -> str:
        """Add one generated token; return the text it makes final (often "", never a split character)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        return self._release(self._decode_new(final=False), final=False)

    def flush(self) -> str:
        """At the end of generation: release the held-back text (nothing once a stop string matched)."""
        if self.stopped:
            return ""
        return self._release(self._decode_new(final=True), final=True)

    def _decode(self, start: int, end: int) -> str:
        return self._tokenizer.decode(self._ids[start:end], skip_special_tokens=self._skip_special)

    def _decode_new(self, *, final: bool) -> str:
        """Text the tokens since `read_offset` add, or "" while it still ends in a split character."""
        prefix_text = self._decode(self._prefix_offset, self._read_offset)
        new_text = self._decode(self._prefix_offset, len(self._ids))
        if len(new_text) <= len(prefix_text) or (new_text.endswith(_REPLACEMENT) and not final):
            return ""
        # The window has moved past a character boundary: slide it forward.
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def _release(self, new_text: str, *, final: bool) -> str:
        buffer = self._pending + new_text
        if not self._stops:
            self._pending = ""
            return self._emit(buffer)
        match = _first_completed(buffer, self._stops)
        if match is not None:
            start, stop = match
            self.stopped = True
            self.matched_stop = stop
            self._pending = ""
            return self._emit(buffer[:start])
        hold = 0 if final else _longest_partial(buffer, self._stops)
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return self._emit(buffer[: len(buffer) - hold])

    def _emit(self, delta: str) -> str:
        if delta:
            self._emitted.append(delta)
        return delta


def _first_completed(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """(start, stop) of the stop string that completes first in `text`; ties go to the longest."""
    best: tuple[int, int, str] | None = None  # (end, -length, stop)
    for stop in stops:
        start = text.find(stop)
        if start >= 0:
            key = (start + len(stop), -len(stop), stop)
            if best is None or key < best:
                best = key
    if best is None:
        return None
    end, negative_length, stop = best
    return end + negative_length, stop


def _longest_partial(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest
