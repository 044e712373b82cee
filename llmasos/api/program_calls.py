"""Running programs (services, tools, function calling) for HTTP requests: on threads of their own,
bounded, and cancelled when the client goes away.

A program call blocks a thread while its model calls run. On FastAPI's shared thread pool (40 threads)
44–48 concurrent service calls took every thread, so `/healthz` and the admission of new streams
waited 8 s; and a call whose client hung up went on generating for a minute. Here each call gets a
thread of a pool of its own; when every thread is busy the call is refused at once with 429 and
`Retry-After` (its processes would only queue in the kernel behind the others). While a call runs,
the request checks every `DISCONNECT_POLL_SECONDS` whether its client is still there; when it is
not, the call's cancellation is raised, which cancels its live processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fastapi import FastAPI, Request

from llmasos.api.generation import DISCONNECT_POLL_SECONDS
from llmasos.errors import CallCancelledError, QuotaExceededError
from llmasos.programs import Cancellation

T = TypeVar("T")

#: Program calls running at once per server; above this they are refused with 429 rather than queued.
#: Each holds a thread, mostly waiting on its processes; 32 is the engine's default batch
#: (`max_num_seqs`), so the calls admitted can all be generating. With 48 calls on the tiny model
#: (benchmarks/program_calls.py) /healthz answered within 278 ms; on the shared pool it took 21.6 s.
MAX_PROGRAM_CALLS = 32
#: What a refused call is told to wait. Not measured: short beside a service call's seconds, so a
#: retrying client neither waits long nor retries in a tight loop.
RETRY_AFTER_SECONDS = 2.0

_POOL_LOCK = threading.Lock()


class ProgramPool:
    """At most `size` program calls at once, each on a thread of this pool."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0  # calls holding a thread now
        self._running: set[Cancellation] = set()
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="program-call")
        self._lock = threading.Lock()

    def _take(self) -> bool:
        with self._lock:
            if self.busy >= self.size:
                return False
            self.busy += 1
            return True

    def _give(self) -> None:
        with self._lock:
            self.busy -= 1

    async def run(self, request: Request | None, fn: Callable[[Cancellation], T]) -> T:
        """`fn(cancellation)` on a pool thread; QuotaExceededError (429) when every thread is busy.
        With `request`, a departed client raises the cancellation and this raises CallCancelledError."""
        if not self._take():
            raise QuotaExceededError(
                f"the server runs {self.size} program calls at once, its limit; "
                f"retry in {RETRY_AFTER_SECONDS:.0f} s",
                RETRY_AFTER_SECONDS,
            )
        cancellation = Cancellation()
        with self._lock:
            self._running.add(cancellation)

        def work() -> T:
            try:
                return fn(cancellation)
            finally:
                with self._lock:
                    self._running.discard(cancellation)
                self._give()

        future = asyncio.wrap_future(self._executor.submit(work))
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_SECONDS)
                if done:
                    return future.result()
                if request is not None and await request.is_disconnected():
                    _abandon(future, cancellation)
                    raise CallCancelledError("the client went away; its program call was cancelled")
        except asyncio.CancelledError:  # the server is shutting the request down
            _abandon(future, cancellation)
            raise

    def close(self) -> None:
        """Cancel every running call (the server is stopping): their threads end with their processes,
        so the interpreter's exit does not wait on them."""
        with self._lock:
            running = list(self._running)
        for cancellation in running:
            cancellation.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _abandon(future: asyncio.Future, cancellation: Cancellation) -> None:
    """Stop a call nobody waits for any more; its end (a CallCancelledError, usually) is dropped."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    cancellation.set()


def program_pool(request: Request) -> ProgramPool:
    """The server's pool of program-call threads (made on first use)."""
    state = request.app.state
    pool = getattr(state, "program_pool", None)
    if pool is None:
        with _POOL_LOCK:
            pool = getattr(state, "program_pool", None)
            if pool is None:
                pool = state.program_pool = ProgramPool(MAX_PROGRAM_CALLS)
    return pool


def close_program_pool(app: FastAPI) -> None:
    """At shutdown: cancel the program calls still running, if any ever ran."""
    pool = getattr(app.state, "program_pool", None)
    if pool is not None:
        pool.close()
