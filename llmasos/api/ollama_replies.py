"""What the Ollama API answers: its reply objects, NDJSON streams and timings, over a `Generation`.

Ollama streams by default: one JSON object per line, each with a text delta (`message.content` for
/api/chat, `response` for /api/generate) and `"done": false`, then one final object with
`"done": true`, `done_reason` and the counts and durations (in nanoseconds) of the request. With
`"stream": false` the same final object carries the whole text. An error after the stream started is
a line `{"error": "..."}`, which Ollama's clients raise.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from llmasos.api.generation import Generation

NDJSON = "application/x-ndjson"


def now_iso() -> str:
    """Ollama's `created_at`: RFC 3339 in UTC."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def ndjson(lines: AsyncIterator[dict]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async for line in lines:
            yield json.dumps(line) + "\n"

    return StreamingResponse(body(), media_type=NDJSON, headers={"Cache-Control": "no-cache"})


def done_reason(finish_reason: str | None) -> str:
    """Ollama's done_reason: "length" when the token budget ran out, "stop" otherwise."""
    return "length" if finish_reason == "length" else "stop"


@dataclass
class Timing:
    """The request's clock, for Ollama's durations (nanoseconds)."""

    started: float = field(default_factory=time.perf_counter)
    admitted: float | None = None  # the process was admitted (the model loaded, if it had to be)
    first_token: float | None = None
    finished: float | None = None

    def mark(self, attribute: str) -> None:
        if getattr(self, attribute) is None:
            setattr(self, attribute, time.perf_counter())

    def stats(self, prompt_tokens: int, output_tokens: int) -> dict:
        self.mark("finished")
        admitted = self.admitted or self.started
        first = self.first_token or self.finished
        assert self.finished is not None
        return {
            "total_duration": _ns(self.finished - self.started),
            "load_duration": _ns(admitted - self.started),
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": _ns(first - admitted),
            "eval_count": output_tokens,
            "eval_duration": _ns(self.finished - first),
        }


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


@dataclass(frozen=True)
class ReplyShape:
    """Where a reply's text goes: /api/chat's `message.content` or /api/generate's `response`."""

    model: str
    is_chat: bool

    def delta(self, text: str) -> dict:
        return {"message": {"role": "assistant", "content": text}} if self.is_chat else {"response": text}

    def line(self, text: str, **extra: object) -> dict:
        return {"model": self.model, "created_at": now_iso(), **self.delta(text), **extra}

    def final(self, text: str, reason: str, stats: dict, **extra: object) -> dict:
        return self.line(text, done=True, done_reason=reason, **stats, **extra)


def _pid_headers(gen: Generation) -> dict[str, str]:
    # As on the OpenAI routes: /os/tasks/{pid} inspects or cancels the process behind a request.
    return {"X-LLMasOS-Pids": ",".join(str(c.process.pid) for c in gen.choices)}


async def reply(
    gen: Generation, shape: ReplyShape, timing: Timing, request: Request, stream: bool
) -> JSONResponse | StreamingResponse:
    """The answer of one generation, streamed as NDJSON or as one object."""
    if stream:
        response = ndjson(_stream(gen, shape, timing, request))
        response.headers.update(_pid_headers(gen))
        return response
    async for _ in _events(gen, timing, request):
        pass
    choice = gen.choices[0]
    if choice.error is not None:
        raise choice.error
    stats = timing.stats(choice.process.tokens_in, choice.process.tokens_out)
    body = shape.final("".join(choice.text), done_reason(choice.finish_reason), stats)
    return JSONResponse(body, headers=_pid_headers(gen))


async def _events(gen: Generation, timing: Timing, request: Request) -> AsyncIterator[str]:
    """The text deltas of the generation's one choice; a departed client cancels it."""
    async for _, event in gen.events(request):
        if not event.finished and event.text:
            timing.mark("first_token")
            yield event.text


async def _stream(
    gen: Generation, shape: ReplyShape, timing: Timing, request: Request
) -> AsyncIterator[dict]:
    async for text in _events(gen, timing, request):
        yield shape.line(text, done=False)
    choice = gen.choices[0]
    if not choice.done:
        return  # the client went away
    if choice.error is not None:
        yield {"error": choice.error.message}
        return
    stats = timing.stats(choice.process.tokens_in, choice.process.tokens_out)
    yield shape.final("", done_reason(choice.finish_reason), stats)


async def whole_reply(
    shape: ReplyShape, message: dict, reason: str, stats: dict, stream: bool
) -> JSONResponse | StreamingResponse:
    """A reply computed whole before it is sent (tool calls): as one object, or as a one-line stream
    followed by the final line, as Ollama streams a tool call."""
    body = {"model": shape.model, "created_at": now_iso(), "message": message}
    if not stream:
        return JSONResponse({**body, "done": True, "done_reason": reason, **stats})

    async def lines() -> AsyncIterator[dict]:
        yield {**body, "done": False}
        yield shape.final("", reason, stats)

    return ndjson(lines())
