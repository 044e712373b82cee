"""Running generations for HTTP requests: start the processes, then wait for them or stream them.

Events arrive from the kernel's thread through a subscription that hands them to the event loop,
so thousands of open streams cost no thread each. They cross in bursts: a tick's events for every
stream of a loop wake it once (`LoopDelivery`), not once per token, and a stream that fell behind
reads what has piled up as one delta per choice. When the client goes away (a dropped stream, or a
closed connection while waiting for a whole answer) the processes are cancelled at once and the
kernel returns their KV blocks on its next tick. An event counts as taken by the client (`taken`,
kernel/backpressure.py) only when the consumer comes back for the next one, after the transport
accepted it: a client that stops reading stops its processes once their untaken output is at the
kernel's bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from llmasos.engine.sampling_params import SamplingParams, TokenLogprobs
from llmasos.errors import ClientDisconnectedError, LLMasOSError
from llmasos.kernel.kernel import Event
from llmasos.kernel.process import Process
from llmasos.kernel.sampling_request import SAMPLING_FIELDS, sampling_params
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App

#: How often a request checks whether its client is still there (waiting or streaming). At 0.5 s the
#: tiny test model's 200 tokens sometimes outran the check in full test runs (the disconnect test saw
#: "finished" in two sessions, never alone), so a departed client's generation ran to its end.
DISCONNECT_POLL_SECONDS = 0.1


def request_sampling(body: Any, choice: int = 0) -> SamplingParams:
    """SamplingParams of an OpenAI request body (a pydantic model) for one of its `n` choices,
    through the one builder every interface uses (`kernel.sampling_request`)."""
    return sampling_params(body.model_dump(include=SAMPLING_FIELDS), choice=choice)


class LoopDelivery:
    """Hands items from other threads to queues of one event loop, waking the loop once per burst.

    The kernel emits a tick's events for every stream back to back; one `call_soon_threadsafe` per
    event (a self-pipe write and a loop wake-up each) cost the loop a wake-up per token per stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[asyncio.Queue, object]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopDelivery:
        with _DELIVERIES_LOCK:
            delivery = _DELIVERIES.get(loop)
            if delivery is None:
                delivery = _DELIVERIES[loop] = cls(loop)
            return delivery

    def put(self, queue: asyncio.Queue, item: object) -> None:
        """From any thread: `queue.put_nowait(item)` in the loop, soon."""
        with self._lock:
            self._pending.append((queue, item))
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop has closed (server shutdown): nobody listens
            self.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._scheduled = False
        for queue, item in pending:
            queue.put_nowait(item)


@dataclass
class Choice:
    index: int
    process: Process
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)  # when the request asked for them
    finish_reason: str | None = None
    error: LLMasOSError | None = None
    done: bool = False


class Generation:
    """The processes of one request (one per choice) and the merged stream of their events."""

    def __init__(self, syscalls: Syscalls, app: App, processes: list[Process]) -> None:
        self.syscalls = syscalls
        self.app = app
        self.choices = [Choice(i, p) for i, p in enumerate(processes)]
        self._queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        delivery = LoopDelivery.of(asyncio.get_running_loop())
        for choice in self.choices:

            def deliver(event: Event, index: int = choice.index) -> None:
                delivery.put(self._queue, (index, event))

            syscalls.subscribe(app, choice.process.pid, deliver)

    @classmethod
    async def start(
        cls,
        syscalls: Syscalls,
        app: App,
        n: int,
        start_one: Callable[[int], Process],
        request: Request | None = None,
    ) -> Generation:
        """Start `n` processes with `start_one(choice)` (off the event loop: admission may load a
        model); if one is refused, cancel those already started and raise its error. With `request`,
        a client that has left is never admitted (ClientDisconnectedError), and one that left while
        its processes were admitted has them cancelled at once, before the kernel prefills them."""
        processes: list[Process] = []
        try:
            for i in range(n):
                await refuse_if_client_left(request)
                processes.append(await run_in_threadpool(start_one, i))
            await refuse_if_client_left(request)
        except BaseException as err:
            departed = isinstance(err, ClientDisconnectedError)
            reason = str(err) if departed else "a sibling choice was refused"
            for process in processes:
                _cancel_quietly(syscalls, app, process, reason)
            if departed and processes:
                err.audited = True  # the processes' end rows say the client left: no row of its own
            raise
        return cls(syscalls, app, processes)

    @property
    def prompt_tokens(self) -> int:
        return self.choices[0].process.tokens_in

    @property
    def completion_tokens(self) -> int:
        return sum(c.process.tokens_out for c in self.choices)

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    async def events(self, request: Request | None = None) -> AsyncIterator[tuple[Choice, Event]]:
        """(choice, event) until every choice has finished. With `request`, a departed client cancels.
        Text events that piled up for a choice come as one (their text and tokens joined)."""
        loop = asyncio.get_running_loop()
        checked = loop.time()
        try:
            while not all(c.done for c in self.choices):
                batch = await self._next_batch()
                # Checked while tokens flow too, at most every poll interval: a fast model may never
                # leave the queue idle, and a write to a closed socket need not fail, so a departed
                # client's generation could run to its end (the disconnect test once saw "finished").
                if request is not None and (not batch or loop.time() - checked >= DISCONNECT_POLL_SECONDS):
                    checked = loop.time()
                    if await request.is_disconnected():
                        return
                for index, event in batch:
                    choice = self.choices[index]
                    if event.finished:
                        choice.done = True
                        choice.finish_reason = event.finish_reason
                        choice.error = event.error
                    else:
                        choice.text.append(event.text)
                        choice.logprobs.extend(event.logprobs)
                    yield choice, event
                    # Resumed: the consumer is done with the event (a stream's body awaited the
                    # transport's `send`, which waits while its write buffer is full), so the
                    # kernel may compute more for it.
                    self._taken(choice, event)
        finally:
            self.cancel_unfinished("the client disconnected")

    def _taken(self, choice: Choice, event: Event) -> None:
        if event.token_ids and not choice.process.is_terminal:
            with contextlib.suppress(LLMasOSError):  # it may have ended meanwhile
                self.syscalls.taken(self.app, choice.process.pid, len(event.token_ids))

    async def _next_batch(self) -> list[tuple[int, Event]]:
        """Every event waiting now (waiting up to the poll interval for one), coalesced; [] if none came."""
        if self._queue.empty():
            try:
                async with asyncio.timeout(DISCONNECT_POLL_SECONDS):
                    first = await self._queue.get()
            except TimeoutError:
                return []
        else:
            first = self._queue.get_nowait()
        batch = [first]
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return _coalesced(batch)

    async def wait(self, request: Request) -> None:
        """Run every choice to its end; raise the first choice's error if one failed."""
        async for _ in self.events(request):
            pass
        for choice in self.choices:
            if choice.error is not None:
                raise choice.error

    def cancel_unfinished(self, reason: str) -> None:
        for choice in self.choices:
            if not choice.done:
                _cancel_quietly(self.syscalls, self.app, choice.process, reason)


async def refuse_if_client_left(request: Request | None) -> None:
    """ClientDisconnectedError when `request`'s client has closed its connection. Checked before
    admission (a storm of dropped requests once cost tokenizing, admission and audit rows each)."""
    if request is not None and await request.is_disconnected():
        raise ClientDisconnectedError("the client disconnected before its request was admitted")


_DELIVERIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopDelivery] = weakref.WeakKeyDictionary()
_DELIVERIES_LOCK = threading.Lock()


def _coalesced(batch: list[tuple[int, Event]]) -> list[tuple[int, Event]]:
    """Each choice's text events in `batch` joined into its first one (its final event stays after
    them): a stream that fell behind sends one delta per choice instead of one per token. Each
    choice's own order is kept; choices are independent streams."""
    merged: list[tuple[int, Event]] = []
    open_text: dict[int, int] = {}  # choice -> position in `merged` of its text event still joinable
    for index, event in batch:
        position = open_text.get(index)
        if event.finished:
            open_text.pop(index, None)
        elif position is not None:
            joined = merged[position][1]
            merged[position] = (
                index,
                replace(
                    joined,
                    text=joined.text + event.text,
                    token_ids=joined.token_ids + event.token_ids,
                    logprobs=joined.logprobs + event.logprobs,
                ),
            )
            continue
        else:
            open_text[index] = len(merged)
        merged.append((index, event))
    return merged


def _cancel_quietly(syscalls: Syscalls, app: App, process: Process, reason: str) -> None:
    """Cancel from the event loop a process whose request is over without it (`Syscalls.abandon`):
    no disk write here, and no row beside the process's own end row, which records `reason`."""
    if process.is_terminal:
        return
    with contextlib.suppress(LLMasOSError):  # it may have ended meanwhile
        syscalls.abandon(app, process.pid, reason)
