"""Streaming a function-calling request as OpenAI streams it: answer text as it is generated, and
each call as it is generated — a first delta with the call's index, id, type and function name,
then `function.arguments` fragments — then each choice's finish reason ("tool_calls", or
"function_call" for the legacy `functions`).

The program runs on a thread of the program pool and reports through `on_event`; the events reach
the response through an asyncio queue. The response starts once the first event came (or the
program ended), so an error before any output is still an ordinary HTTP error (400, 403, 429...).

Backpressure: the program may be at most `WINDOW_EVENTS` events ahead of what the transport accepted;
beyond that `on_event` waits, so the program stops reading its processes' output and the kernel stops
computing them at its bound (kernel/backpressure.py). A client that takes nothing for the reader
timeout fails the program with `ReaderTimeoutError` rather than holding its thread forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from llmasos.api.errors import error_body
from llmasos.api.generation import LoopDelivery
from llmasos.api.program_calls import ProgramPool
from llmasos.errors import LLMasOSError, ReaderTimeoutError
from llmasos.services.function_calling import Decision, ToolEvent

_END = object()  # put on the queue when the program has ended

#: Events the program may send ahead of the transport: about as many tokens as the kernel lets a
#: process's reader leave untaken (`[kernel] output_buffer_tokens`), each event being a token or less.
WINDOW_EVENTS = 512


class _Window:
    """How many events the program is ahead of the transport; the program's thread waits at the size."""

    def __init__(self, size: int, timeout: float | None) -> None:
        self._size, self._timeout = size, timeout
        self._ahead = 0
        self._closed = False
        self._changed = threading.Condition()

    def enter(self) -> None:
        """From the program's thread, before an event goes out."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._ahead < self._size or self._closed, self._timeout):
                raise ReaderTimeoutError(
                    f"the client took none of the stream for {self._timeout or 0:.0f} s with {self._ahead} "
                    "events waiting; a stream must be read to go on"
                )
            self._ahead += 1

    def left(self) -> None:
        """From the event loop, once the transport accepted an event."""
        with self._changed:
            self._ahead -= 1
            self._changed.notify()

    def close(self) -> None:
        """The response ended: the program never waits again."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class ToolStream:
    """The chunks of one streamed function-calling request."""

    def __init__(
        self, base: dict, legacy: bool, include_usage: bool, reader_timeout: float | None = None
    ) -> None:
        self.base = base
        self.legacy = legacy
        self.include_usage = include_usage
        self._queue: asyncio.Queue = asyncio.Queue()
        self._delivery = LoopDelivery.of(asyncio.get_running_loop())
        self._started: set[int] = set()  # choices whose first delta (with the role) was sent
        self._window = _Window(WINDOW_EVENTS, reader_timeout)

    def on_event(self, event: ToolEvent) -> None:
        """From the program's thread; waits while the program is a window ahead of the transport."""
        self._window.enter()
        self._delivery.put(self._queue, event)

    async def start(self, pool: ProgramPool, program: Callable[[Any], Any]) -> StreamingResponse:
        # No request given to the pool: the response body's own cancellation, when the client goes
        # away, cancels the task, and the pool then cancels the program's processes.
        task = asyncio.ensure_future(pool.run(None, program))
        task.add_done_callback(lambda _: self._queue.put_nowait(_END))
        first = await self._queue.get()
        if first is _END:
            task.result()  # an error before any output: raised as the request's HTTP error
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(self._body(first, task), media_type="text/event-stream", headers=headers)

    async def _body(self, first: object, task: asyncio.Future) -> AsyncIterator[str]:
        try:
            item = first
            while item is not _END:
                yield _sse(self._chunk(item))
                self._window.left()  # resumed: `send` accepted the chunk
                item = await self._queue.get()
            try:
                decisions, usage = task.result()
            except LLMasOSError as err:
                yield _sse(error_body(err.message, err.type, err.type))
            else:
                for index, decision in enumerate(decisions):
                    yield _sse(self._finish(index, decision))
                if self.include_usage:
                    yield _sse({**self.base, "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"
        finally:
            self._window.close()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _chunk(self, event: ToolEvent) -> dict:
        delta: dict[str, Any]
        if event.kind == "text":
            delta = {"content": event.text}
        elif event.kind == "call":
            delta = {"content": None, **self._call_start(event)}
        else:
            delta = self._arguments(event)
        if event.choice not in self._started:
            self._started.add(event.choice)
            delta = {"role": "assistant", **delta}
        return {**self.base, "choices": [{"index": event.choice, "delta": delta, "finish_reason": None}]}

    def _call_start(self, event: ToolEvent) -> dict:
        function = {"name": event.text, "arguments": ""}
        if self.legacy:
            return {"function_call": function}
        call = {"index": event.call, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function"}
        return {"tool_calls": [{**call, "function": function}]}

    def _arguments(self, event: ToolEvent) -> dict:
        if self.legacy:
            return {"function_call": {"arguments": event.text}}
        return {"tool_calls": [{"index": event.call, "function": {"arguments": event.text}}]}

    def _finish(self, index: int, decision: Decision) -> dict:
        reason = "function_call" if decision.is_call and self.legacy else decision.finish_reason
        delta = {} if index in self._started else {"role": "assistant", "content": decision.content or ""}
        return {**self.base, "choices": [{"index": index, "delta": delta, "finish_reason": reason}]}


def _sse(chunk: dict) -> str:
    return f"data: {json.dumps(chunk)}\n\n"
