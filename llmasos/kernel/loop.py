"""Running a kernel: its loop in a daemon thread (servers), or ticks in the caller's thread until idle
(tests, scripts). The kernel's own state and tick live in kernel.py."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmasos.kernel.kernel import KernelConfig
    from llmasos.kernel.process import Process
    from llmasos.kernel.residency import ResidencyManager

logger = logging.getLogger(__name__)

#: How soon a tick that ran nothing while processes are live looks again: what held them (the policy's
#: latency hold after urgent work, an app's quota) ends with time, not with an event that wakes the loop.
WAITING_RECHECK_SECONDS = 0.05


class KernelLoop:
    """The loop half of `Kernel`: it ticks while any model has work and sleeps until woken when none
    has."""

    config: KernelConfig
    residency: ResidencyManager
    table: dict[int, Process]
    live: dict[int, Process]
    lock: threading.RLock
    _pending_aborts: list[tuple[str, int]]

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
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
            try:
                computed = self.tick()
                with self.lock:
                    self.residency.unload_expired()
            except Exception:  # never let one bad tick kill the scheduler
                logger.exception("kernel tick failed")
                computed = 0
            if computed == 0:
                self._wake.wait(self._idle_wait())
                self._wake.clear()

    def _idle_wait(self) -> float:
        with self.lock:
            waiting = bool(self.live)
        idle = self.config.idle_sleep_seconds
        return min(idle, WAITING_RECHECK_SECONDS) if waiting else idle

    def run_until_idle(self, max_ticks: int = 1_000_000) -> None:
        """Tick in the caller's thread until no process is live (tests, scripts)."""
        for _ in range(max_ticks):
            with self.lock:
                live = bool(self.live)
            if not live and not self._pending_aborts:
                return
            self.tick()
        raise RuntimeError(f"kernel still busy after {max_ticks} ticks")
