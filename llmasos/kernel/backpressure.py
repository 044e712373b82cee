"""Backpressure: a process whose reader does not take its output stops being computed.

An OS blocks a writer whose pipe is full; the kernel blocks a process whose outbox holds
`OutputLimits.buffer_tokens` tokens its reader has not taken. A blocked process is not runnable (the
policy never sees it), and its KV waits where the context switch puts a suspended process's: left in
the pool while half of it is free, else copied to host memory or dropped for recompute, whichever
costs less. Once its reader has taken enough that fewer than `resume_below` tokens wait, the process
is ready again and the kernel's loop is woken. A reader that takes nothing for
`reader_timeout_seconds` ends its process (cancelled, with `ReaderTimeoutError`, audited like every
end), so a client that never reads holds its KV for a bounded time.

"Taken" means what the reader says: `Kernel.events` counts an event as taken when its reader pulls it
from the queue; a subscriber (the HTTP server) reports with `Kernel.taken` once the transport
accepted what it made of the event, so nothing between the engine and the socket piles up unbounded.

Mixed into `Kernel`, as `KernelLoop` is; its methods run under the kernel's lock, in the tick, except
`taken`, which any reader's thread calls.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmasos.engine.sequence import SuspendMode
from llmasos.errors import InvalidRequestError, ReaderTimeoutError
from llmasos.kernel.context_switch import FREE_FRACTION_FOR_KEEP, choose_suspend_mode
from llmasos.kernel.process import Process, ProcessState

if TYPE_CHECKING:
    from llmasos.engine.protocol import Engine
    from llmasos.kernel.kernel import KernelConfig
    from llmasos.kernel.work import Work

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputLimits:
    """How far a process's reader may fall behind before the process waits for it."""

    # Undelivered tokens at which a process blocks. 512: a reader at network speed never gets near it
    # (the engine adds one token per step); a client that never reads costs the engine this many tokens
    # beyond what the transport took (before: its whole answer, up to max_tokens or the window).
    buffer_tokens: int = 512
    # Seconds a blocked process waits for its reader to take anything before it is ended: how long a
    # client that stopped reading holds its KV.
    reader_timeout_seconds: float = 120.0

    def __post_init__(self) -> None:
        tokens = self.buffer_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 2:
            raise InvalidRequestError(f"the output buffer must be at least 2 tokens, got {tokens!r}")
        timeout = self.reader_timeout_seconds
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise InvalidRequestError(
                f"the reader timeout must be a positive number of seconds, got {timeout!r}"
            )

    @property
    def resume_below(self) -> int:
        """The low-water mark: a blocked process is ready again once fewer tokens than this wait
        (half the buffer: it then runs a while before it blocks again, not one token at a time)."""
        return self.buffer_tokens // 2


def is_runnable(process: Process) -> bool:
    """Whether the policy may give `process` a slot: live and not waiting for its reader."""
    return not process.is_terminal and process.state is not ProcessState.BLOCKED


class ReaderWaits:
    """The backpressure half of `Kernel`: block, release and time out processes by their readers."""

    config: KernelConfig
    table: dict[int, Process]
    work: dict[int, Work]
    _wake: threading.Event
    cancel: Callable[..., None]  # Kernel.cancel(process, reason, error)
    _fail_request: Callable[..., None]  # Kernel._fail_request(engine, request_id, err, stage)

    # ---- any thread ----------------------------------------------------------------------------

    def taken(self, pid: int, tokens: int) -> None:
        """The reader of process `pid` took `tokens` output tokens (the transport accepted them). Wakes
        the loop when that makes a blocked process ready. Called by the process's one reader."""
        work = self.work.get(pid)
        process = self.table.get(pid)
        if work is None or process is None or tokens <= 0:
            return
        work.tokens_taken += tokens
        # Read after the count moved; the kernel sets BLOCKED before its last look at the count, so
        # either it sees this reader's tokens or this reader sees it blocked (and wakes it).
        limits = self.config.output
        if process.state is ProcessState.BLOCKED and limits and work.undelivered < limits.resume_below:
            self._wake.set()

    # ---- the tick (kernel thread, under the lock) ------------------------------------------------

    def _hold_for_readers(self, engine: Engine, live: list[Process], now: float) -> None:
        """Before the policy chooses: block the processes whose outbox is full, make ready those
        whose reader caught up, and end those whose reader took nothing for the timeout."""
        limits = self.config.output
        if limits is None:
            return
        for process in live:
            work = self.work[process.pid]
            if process.state is ProcessState.BLOCKED:
                self._release_or_expire(process, work, limits, now)
                if process.state is ProcessState.BLOCKED and work.kv_kept_while_blocked:
                    self._move_out_if_pool_short(engine, process, work, now)
            elif work.undelivered >= limits.buffer_tokens and process.state in _BLOCKABLE:
                self._block(engine, process, work, limits, now)

    def _block(self, engine: Engine, process: Process, work: Work, limits: OutputLimits, now: float) -> None:
        where = ""  # a suspended process's KV stays where the context switch put it
        work.kv_kept_while_blocked = False  # (and is not ours to move)
        if process.state is ProcessState.RUNNING:
            # The reader's pause is unknown; choosing as for a short wait keeps the KV resident while
            # the pool has room (a slow reader resumes at no cost); `_move_out_if_pool_short` moves
            # it when the pool runs short later.
            mode = self._suspend_for_reader(engine, process, 0.0)
            if mode is None:
                return
            work.kv_kept_while_blocked = mode is SuspendMode.KEEP
            where = f"; KV {mode.value}"
        work.taken_seen, work.taken_seen_at = work.tokens_taken, now
        work.times_blocked += 1
        process.transition(
            ProcessState.BLOCKED,
            f"waiting for its reader: {work.undelivered} tokens not taken{where}",
            now,
        )
        # The last look, after BLOCKED is set (see `taken`): a reader that caught up meanwhile.
        self._release_or_expire(process, work, limits, now)

    def _move_out_if_pool_short(self, engine: Engine, process: Process, work: Work, now: float) -> None:
        """A blocked process's KV left in the pool goes to host memory (or is dropped for recompute,
        if cheaper) once under half the pool is free, as the context switch would have chosen then:
        a client that does not read must not keep blocks that runnable processes need. The request
        stays suspended: the engine moves kept KV out without a resume (which would make it runnable
        for nothing, and on a cluster cost a call to its node)."""
        if _free_fraction(engine) >= FREE_FRACTION_FOR_KEEP:
            return
        mode = self._suspend_for_reader(engine, process, math.inf)
        if mode is not None:
            work.kv_kept_while_blocked = False
            reason = process.reason.partition("; KV")[0]
            process.transition(ProcessState.BLOCKED, f"{reason}; KV {mode.value} (the pool ran short)", now)

    def _suspend_for_reader(self, engine: Engine, process: Process, wait: float) -> SuspendMode | None:
        """Suspend the process's request in the mode the context switch picks for `wait` seconds;
        None (and the process failed) if the engine cannot."""
        request_id = str(process.pid)
        try:
            mode = choose_suspend_mode(engine.suspend_costs(request_id), wait, _free_fraction(engine))
            engine.suspend(request_id, mode)
        except Exception as err:
            logger.exception("suspending pid %d for its reader failed", process.pid)
            self._fail_request(engine, request_id, err, "suspend")
            return None
        return mode

    def _release_or_expire(self, process: Process, work: Work, limits: OutputLimits, now: float) -> None:
        if work.undelivered < limits.resume_below:
            process.transition(ProcessState.SUSPENDED, "ready: its reader took its output", now)
            return
        if work.tokens_taken != work.taken_seen:  # the reader took something: the timeout restarts
            work.taken_seen, work.taken_seen_at = work.tokens_taken, now
            return
        idle = now - work.taken_seen_at
        if idle >= limits.reader_timeout_seconds:
            reason = (
                f"its reader took none of its output for {idle:.0f} s ({work.undelivered} tokens "
                f"waiting); a stream must be read to go on"
            )
            self.cancel(process, reason, ReaderTimeoutError(reason))


_BLOCKABLE = frozenset({ProcessState.RUNNING, ProcessState.SUSPENDED})


def _free_fraction(engine: Engine) -> float:
    stats = engine.stats()
    return stats.num_free_blocks / max(stats.num_blocks, 1)
