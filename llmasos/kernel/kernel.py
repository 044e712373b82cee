"""The kernel: the process table, and the tick that decides at every engine step who runs.

Each tick, for every resident model with live processes: the policy picks which processes hold
the engine's batch slots; running processes that lost their slot are context-switched out
(suspended, the mode chosen by cost); winners are admitted or resumed; the engine takes one step;
the tokens it computed are charged to their processes and apps; new text goes to each process's
event queue.

Threads: system calls (`llmasos.kernel.syscalls`) may come from any thread; they only touch the
process table, under a lock. Everything that touches an engine runs in the kernel's own thread
(`start()`), or in the caller's when tests drive `tick()` by hand with a fake clock.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmasos.config import EngineConfig
from llmasos.engine.sampling import SamplingParams
from llmasos.errors import LLMasOSError
from llmasos.kernel.admission import QueueLimits, ServiceRate, TokenRateLimiter
from llmasos.kernel.context_switch import choose_suspend_mode
from llmasos.kernel.counters import KernelCounters
from llmasos.kernel.policies import Policy, make_policy
from llmasos.kernel.process import Process, ProcessState
from llmasos.kernel.residency import ResidencyManager

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelConfig:
    """How the kernel schedules and admits work."""

    policy: str = "default"  # a name from llmasos.kernel.policies.POLICIES
    policy_options: dict = field(default_factory=dict)
    queue: QueueLimits = field(default_factory=QueueLimits)
    engine: EngineConfig = field(default_factory=EngineConfig)
    # Seconds the loop sleeps when no model has work (new work wakes it at once).
    idle_sleep_seconds: float = 0.5
    # Ended processes kept in the table for `ps`/`status` (newest first); older ones are forgotten so
    # a long-running server's table does not grow without bound.
    finished_retention: int = 1000


@dataclass(frozen=True)
class Event:
    """What a process produced: text as it comes, then one final event."""

    pid: int
    text: str = ""
    token_ids: tuple[int, ...] = ()
    finished: bool = False
    finish_reason: str | None = None  # stop, length, cancelled, error
    error: LLMasOSError | None = None


@dataclass
class Work:
    """What the kernel holds for a process besides its record: the request and its outbox."""

    prompt_ids: list[int]
    params: SamplingParams
    cache_namespace: str
    max_concurrent: int = 0  # the app's quota of processes holding the engine at once; 0: no limit
    events: queue.Queue = field(default_factory=queue.Queue)
    in_engine: bool = False  # added to the engine (and not yet removed)
    keep_text: bool = False  # collect the output text in `text` (for audit logs that keep content)
    text: list[str] = field(default_factory=list)
    error: LLMasOSError | None = None  # why it failed, when it did
    # Set by `Kernel.subscribe`: events go to this callback instead of the queue (async servers).
    listener: Callable[[Event], None] | None = None

    def emit(self, event: Event) -> None:
        """Deliver one event (the kernel calls this under its lock, so a subscription cannot miss one)."""
        if self.listener is not None:
            self.listener(event)
        else:
            self.events.put(event)


class Kernel:
    """The process table and the scheduler loop over every resident model."""

    def __init__(
        self,
        residency: ResidencyManager,
        config: KernelConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or KernelConfig()
        self.residency = residency
        self.clock = clock
        self.table: dict[int, Process] = {}
        self.work: dict[int, Work] = {}
        self.lock = threading.RLock()
        self.counters = KernelCounters()
        self.limiter = TokenRateLimiter()
        self.rates: dict[str, ServiceRate] = {}
        self._policies: dict[str, Policy] = {}
        self._pending_aborts: list[tuple[str, int]] = []  # (model, pid) to abort in the engine
        self._pids = itertools.count(1)
        self._ended: collections.deque[int] = collections.deque()  # pids in the order they ended
        # Called as fn(process, work) under the lock when a process ends (audit, metrics); must be quick.
        self.on_finish: list[Callable[[Process, Work], None]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        make_policy(self.config.policy, **self.config.policy_options)  # fail fast on a bad name

    # ---- the table (any thread, under the lock) -------------------------------------------------

    def new_pid(self) -> int:
        return next(self._pids)

    def admit(self, process: Process, work: Work) -> None:
        """Put a new queued process in the table; the next tick considers it."""
        with self.lock:
            self.table[process.pid] = process
            self.work[process.pid] = work
            self.residency.models[process.model].active += 1
        self._wake.set()

    def cancel(self, process: Process, reason: str = "cancelled by its owner") -> None:
        """End a live process now; its engine sequence (and every KV block) is dropped next tick."""
        with self.lock:
            if process.is_terminal:
                return
            work = self.work[process.pid]
            if work.in_engine:
                self._pending_aborts.append((process.model, process.pid))
            self._finish(process, ProcessState.CANCELLED, reason, "cancelled")
        self._wake.set()

    def events(self, pid: int, timeout: float | None = None) -> Iterator[Event]:
        """A process's events until its final one. `timeout` bounds each wait (queue.Empty)."""
        outbox = self.work[pid].events
        while True:
            event = outbox.get(timeout=timeout)
            yield event
            if event.finished:
                return

    def subscribe(self, pid: int, callback: Callable[[Event], None]) -> None:
        """Send a process's events to `callback` (from the kernel's thread, quickly) instead of its
        queue: first those already waiting, then each as it comes. For servers that must not block a
        thread per stream."""
        with self.lock:
            work = self.work[pid]
            while not work.events.empty():
                callback(work.events.get_nowait())
            work.listener = callback

    def rate(self, model: str) -> ServiceRate:
        return self.rates.setdefault(model, ServiceRate())

    def estimated_wait(self, process: Process) -> float:
        """Seconds until `process` gets the engine: the work of everything at least as urgent
        that is ahead of it, at the model's measured token rate."""
        with self.lock:
            ahead = sum(
                self.remaining_tokens(p)
                for p in self.table.values()
                if p.model == process.model
                and not p.is_terminal
                and p is not process
                and p.priority <= process.priority
                and p.created_at <= process.created_at
            )
        return self.rate(process.model).seconds_for(ahead)

    def remaining_tokens(self, process: Process) -> int:
        """Tokens still to compute for `process`: its uncomputed prompt and its remaining output."""
        work = self.work[process.pid]
        prompt_left = max(0, process.tokens_in - process.tokens_computed)
        return prompt_left + max(0, work.params.max_tokens - process.tokens_out)

    # ---- the loop (kernel thread) -------------------------------------------------------------

    def tick(self) -> int:
        """One scheduling step on every resident model with live work; tokens computed."""
        computed = 0
        self._run_pending_aborts()
        for model in list(self.residency.models):
            computed += self._tick_model(model)
        return computed

    def _tick_model(self, model: str) -> int:
        resident = self.residency.models.get(model)
        if resident is None:
            return 0
        engine = resident.engine
        policy = self._policies.setdefault(
            model, make_policy(self.config.policy, **self.config.policy_options)
        )
        now = self.clock()
        with self.lock:
            live = [p for p in self.table.values() if p.model == model and not p.is_terminal]
            if not live:
                return 0
            chosen = self._within_quotas(policy.select(live, engine.config.max_num_seqs, now))
            self._switch(engine, live, set(map(id, chosen)), chosen, now)
        start = time.perf_counter()
        try:
            outputs = engine.step()
        except Exception as err:  # a bug or a device error: fail the processes, keep the kernel up
            logger.exception("engine step failed on %s", model)
            self._fail_all(engine, model, err)
            return 0
        elapsed = time.perf_counter() - start
        step_tokens = dict(engine.last_step_tokens)
        now = self.clock()
        with self.lock:
            self._account(model, policy, step_tokens, outputs, now)
        self.rate(model).observe(sum(step_tokens.values()), elapsed)
        self.counters.model_step(model, sum(step_tokens.values()), elapsed)
        return sum(step_tokens.values())

    def _within_quotas(self, chosen: list[Process]) -> list[Process]:
        """Drop the picks that would put an app over its concurrent-process quota, in pick order."""
        holding: dict[str, int] = {}
        kept = []
        for process in chosen:
            limit = self.work[process.pid].max_concurrent
            if limit and holding.get(process.app, 0) >= limit:
                continue
            holding[process.app] = holding.get(process.app, 0) + 1
            kept.append(process)
        return kept

    def _switch(
        self, engine: Any, live: list[Process], chosen_ids: set[int], chosen: list[Process], now: float
    ) -> None:
        """Context-switch out the running processes that lost their slot, then let the winners in."""
        losers = [p for p in live if p.state is ProcessState.RUNNING and id(p) not in chosen_ids]
        winner = chosen[0] if chosen else None
        for process in losers:
            request_id = str(process.pid)
            costs = engine.suspend_costs(request_id)
            stats = engine.stats()
            mode = choose_suspend_mode(
                costs, self.estimated_wait(process), stats.num_free_blocks / max(stats.num_blocks, 1)
            )
            engine.suspend(request_id, mode)
            by = f" by pid {winner.pid} ({winner.priority.label})" if winner else ""
            process.transition(ProcessState.SUSPENDED, f"preempted{by}; KV {mode.value}", now)
            self.counters.preempted(process.app, process.model)
        for process in chosen:
            work = self.work[process.pid]
            if process.state is ProcessState.QUEUED:
                try:
                    engine.add(
                        str(process.pid), work.prompt_ids, work.params, cache_namespace=work.cache_namespace
                    )
                except LLMasOSError as err:
                    self._finish(process, ProcessState.FAILED, str(err), "error", err)
                    continue
                work.in_engine = True
                self.counters.waited(process.app, now - process.created_at)
                process.transition(ProcessState.RUNNING, "running", now)
            elif process.state is ProcessState.SUSPENDED:
                engine.resume(str(process.pid))
                process.transition(ProcessState.RUNNING, "running (resumed)", now)

    def _account(
        self, model: str, policy: Policy, step_tokens: dict[str, int], outputs: list, now: float
    ) -> None:
        for request_id, tokens in step_tokens.items():
            process = self.table.get(int(request_id))
            if process is None or process.is_terminal:
                continue
            process.record_computed(tokens)
            policy.charge(process, tokens, now)
            self.limiter.record(process.app, tokens, now, pid=process.pid)
            self.counters.computed(process.app, model, tokens)
        for output in outputs:
            process = self.table.get(int(output.request_id))
            if process is None or process.is_terminal:
                continue
            process.record_output(len(output.token_ids), now)
            self.counters.generated(process.app, model, len(output.token_ids))
            work = self.work[process.pid]
            work.emit(Event(process.pid, output.text, tuple(output.token_ids)))
            if work.keep_text:
                work.text.append(output.text)
            if output.finished:
                work.in_engine = False
                self._finish(
                    process, ProcessState.FINISHED, f"finished ({output.finish_reason})", output.finish_reason
                )

    def _finish(
        self,
        process: Process,
        state: ProcessState,
        reason: str,
        finish_reason: str | None,
        error: LLMasOSError | None = None,
    ) -> None:
        process.transition(state, reason, self.clock())
        self.residency.models[process.model].active -= 1
        self.counters.finished(process.app, process.model, state.value, error)
        work = self.work[process.pid]
        work.error = error
        # Observers (the audit log) run before the final event goes out, so a client that has seen
        # its answer end can already find the record of it.
        for observer in self.on_finish:
            try:
                observer(process, work)
            except Exception:  # an observer's bug must not wedge the scheduler
                logger.exception("on_finish observer failed for pid %d", process.pid)
        work.emit(Event(process.pid, finished=True, finish_reason=finish_reason, error=error))
        self._ended.append(process.pid)
        self._forget_old()

    def _forget_old(self) -> None:
        """Drop the oldest ended processes beyond the retention limit (their engine work is gone)."""
        while len(self._ended) > self.config.finished_retention:
            pid = self._ended[0]
            work = self.work.get(pid)
            if work is not None and work.in_engine:
                return  # its abort has not run yet; forget it on a later call
            self._ended.popleft()
            self.table.pop(pid, None)
            self.work.pop(pid, None)

    def _run_pending_aborts(self) -> None:
        with self.lock:
            pending, self._pending_aborts = self._pending_aborts, []
        for model, pid in pending:
            resident = self.residency.models.get(model)
            if resident is not None and str(pid) in resident.engine.requests:
                resident.engine.abort(str(pid))
            self.work[pid].in_engine = False

    def _fail_all(self, engine: Any, model: str, err: Exception) -> None:
        wrapped = err if isinstance(err, LLMasOSError) else LLMasOSError(f"the engine failed: {err}")
        with self.lock:
            for process in [p for p in self.table.values() if p.model == model and not p.is_terminal]:
                if str(process.pid) in engine.requests:
                    engine.abort(str(process.pid))
                self.work[process.pid].in_engine = False
                self._finish(process, ProcessState.FAILED, str(wrapped), "error", wrapped)

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
                self._wake.wait(self.config.idle_sleep_seconds)
                self._wake.clear()

    def run_until_idle(self, max_ticks: int = 1_000_000) -> None:
        """Tick in the caller's thread until no process is live (tests, scripts)."""
        for _ in range(max_ticks):
            with self.lock:
                live = any(not p.is_terminal for p in self.table.values())
            if not live and not self._pending_aborts:
                return
            self.tick()
        raise RuntimeError(f"kernel still busy after {max_ticks} ticks")
