"""The store's change signal: whoever follows runs (an SSE stream, `follow`, `wait`) sleeps on it and
is woken when a transaction that wrote to the run store commits, instead of reading the store again
on a timer.

The signal is a counter. A follower reads `version` *before* it reads the store; if the store had
nothing new, it waits until the counter moves past what it read. A commit that lands between the
follower's read and its wait has already moved the counter, so no wake-up is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class StoreChanges:
    """A counter of commits to the run store, with waits for threads and for asyncio tasks."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._version = 0
        # asyncio followers: the loop each waits on and the event that wakes it (set from any thread)
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def version(self) -> int:
        with self._condition:
            return self._version

    def notify(self) -> None:
        """A transaction committed: wake every follower."""
        with self._condition:
            self._version += 1
            self._condition.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody to wake
                loop.call_soon_threadsafe(event.set)

    def wait(self, seen: int, timeout: float | None) -> int:
        """Block until the version differs from `seen` (or `timeout` passes); the version now."""
        with self._condition:
            self._condition.wait_for(lambda: self._version != seen, timeout)
            return self._version

    async def wait_async(self, seen: int, timeout: float | None) -> int:
        """`wait` for an asyncio task: it yields its loop while it waits."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._condition:
            if self._version != seen:
                return self._version
            self._async_waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter[1].wait(), timeout)
        finally:
            with self._condition:
                self._async_waiters.discard(waiter)
        return self.version
