"""Running a kernel: its loop in a daemon thread (servers), or ticks in the caller's thread until idle
(tests, scripts). The kernel's own state and tick live in kernel.py.

The loop ticks while ticks compute, and sleeps after one that computed nothing until `wake()` is
called or, when a policy holds live work back for a time (`Policy.changes_at`: the latency hold),
until that time. Everything that makes work runnable calls `wake()`, so no sleep is a poll: the
idle wait bounds a sleep with nothing live (keep-alive expiries are checked after each tick), and a
tick whose chosen work computed nothing (a failure handled inside it) is retried after 50 ms.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmasos.kernel.kernel import KernelConfig
    from llmasos.kernel.process import Process
    from llmasos.kernel.residency import ResidencyManager

logger = logging.getLogger(__name__)


#: How soon the loop ticks again after a tick whose chosen processes computed nothing (see `_sleep`).
STALLED_RETRY_SECONDS = 0.05


@dataclass
class LoopCounters:
    """What the loop did, for tests and benchmarks: a tick that leaves chosen work undone, or a sleep
    that a timeout rather than an event ends while work is live, is a wake-up that was missed."""

    ticks: int = 0
    stalled_ticks: int = 0  # computed nothing although the policy had chosen processes to run
    sleeps_while_live: int = 0  # sleeps after a tick that computed nothing, with processes live
    timed_out_while_live: int = 0  # of those, ended by their timeout (a hold's end), not by wake()


class KernelLoop:
    """The loop half of `Kernel`: it ticks while any model has work and sleeps until woken when none
    has."""

    config: KernelConfig
    residency: ResidencyManager
    table: dict[int, Process]
    live: dict[int, Process]
    lock: threading.RLock
    clock: Callable[[], float]
    _pending_aborts: list[tuple[str, int]]

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop_counters = LoopCounters()
        self.chosen_last_tick = 0  # processes the policies chose in the last tick (set by tick)

    def tick(self) -> int:
        raise NotImplementedError

    def changes_at(self) -> float | None:
        """The kernel clock's time at which a policy may choose differently with time alone."""
        raise NotImplementedError

    def wake(self) -> None:
        """Make the loop tick now. Call it (any thread, cheap, idempotent) whenever something makes a
        process runnable: admitted, cancelled, its reader caught up, a hold released. A loop that
        computed nothing sleeps until woken, so work that becomes runnable without a wake waits."""
        self._wake.set()

    # ---- running in the background -------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Run the loop in a daemon thread until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="llmasos-kernel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        from llmasos.engine.threads import claim_compute_threads

        claim_compute_threads(self.config.engine.num_threads)
        while not self._stop.is_set():
            self._wake.clear()  # before the tick: a wake() during it ends the sleep after it at once
            try:
                computed = self.tick()
                with self.lock:
                    self.residency.unload_expired()
            except Exception:  # never let one bad tick kill the scheduler
                logger.exception("kernel tick failed")
                computed = 0
            self.loop_counters.ticks += 1
            if computed == 0 and not self._stop.is_set():  # stop() sets _stop, then wakes
                self._sleep()

    def _sleep(self) -> None:
        """After a tick that computed nothing: until woken, or until a policy's hold ends."""
        counters = self.loop_counters
        with self.lock:
            live = bool(self.live)
        if not live:
            self._wake.wait(self.config.idle_sleep_seconds)
            return
        counters.sleeps_while_live += 1
        wait = self._idle_wait()
        if self.chosen_last_tick > 0:
            # Chosen work computed nothing: a step failed and its culprit was failed alone, a cluster
            # node was lost and its requests move. No event follows; try again soon.
            counters.stalled_ticks += 1
            wait = min(wait, STALLED_RETRY_SECONDS)
        if not self._wake.wait(wait):
            counters.timed_out_while_live += 1

    def _idle_wait(self) -> float:
        """Seconds to sleep: until the earliest time a policy may choose differently, at most the
        idle wait (nothing live, or live work that only an event can let run)."""
        idle = self.config.idle_sleep_seconds
        due = self.changes_at()
        return idle if due is None else min(idle, max(0.0, due - self.clock()))

    def run_until_idle(self, max_ticks: int = 1_000_000) -> None:
        """Tick in the caller's thread until no process is live (tests, scripts)."""
        for _ in range(max_ticks):
            with self.lock:
                live = bool(self.live)
            if not live and not self._pending_aborts:
                return
            self.tick()
        raise RuntimeError(f"kernel still busy after {max_ticks} ticks")
