"""Streaming a function-calling request as OpenAI streams it: answer text as it is generated, and
each call as it is generated — a first delta with the call's index, id, type and function name,
then `function.arguments` fragments — then each choice's finish reason ("tool_calls", or
"function_call" for the legacy `functions`).

The program runs on a thread of the program pool and reports through `on_event`; the events reach
the response through an asyncio queue. The response starts once the first event came (or the
program ended), so an error before any output is still an ordinary HTTP error (400, 403, 429...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from llmasos.api.errors import error_body
from llmasos.api.generation import LoopDelivery
from llmasos.api.program_calls import ProgramPool
from llmasos.errors import LLMasOSError
from llmasos.services.function_calling import Decision, ToolEvent

_END = object()  # put on the queue when the program has ended


class ToolStream:
    """The chunks of one streamed function-calling request."""

    def __init__(self, base: dict, legacy: bool, include_usage: bool) -> None:
        self.base = base
        self.legacy = legacy
        self.include_usage = include_usage
        self._queue: asyncio.Queue = asyncio.Queue()
        self._delivery = LoopDelivery.of(asyncio.get_running_loop())
        self._started: set[int] = set()  # choices whose first delta (with the role) was sent

    def on_event(self, event: ToolEvent) -> None:
        """From the program's thread."""
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
