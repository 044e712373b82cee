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
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from llmasos.config import EngineConfig
from llmasos.engine.protocol import Engine, PlacedEngine, StepOutput
from llmasos.errors import LLMasOSError
from llmasos.kernel.admission import QueueLimits, ServiceRate, TokenRateLimiter
from llmasos.kernel.backpressure import OutputLimits, ReaderWaits, is_runnable
from llmasos.kernel.context_switch import choose_suspend_mode
from llmasos.kernel.counters import KernelCounters
from llmasos.kernel.faults import abort_quietly, engine_fault, step_apart
from llmasos.kernel.loop import KernelLoop
from llmasos.kernel.policies import Policy, make_policy
from llmasos.kernel.process import Process, ProcessState
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.work import Event, Work

__all__ = ["Event", "Kernel", "KernelConfig", "Work"]  # Event and Work live in work.py

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
    # How far a process's reader may fall behind before the process waits for it (backpressure.py);
    # None: unbounded, for a kernel driven by hand that reads its outboxes afterwards. `boot` sets the
    # settings' limits (`[kernel]`) when it is None.
    output: OutputLimits | None = None


class Kernel(KernelLoop, ReaderWaits):
    """The process table and the scheduler's tick over every resident model (run by `KernelLoop`)."""

    def __init__(
        self,
        residency: ResidencyManager,
        config: KernelConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.config = config or KernelConfig()
        self.residency = residency
        self.clock = clock
        self.table: dict[int, Process] = {}
        # The table's live processes (not ended), by pid in admission order: what a tick and an
        # admission look at, rather than every ended process kept for `ps` (up to
        # `finished_retention`; scanning 1,000 of them cost ~0.5 ms of every tick and admission).
        self.live: dict[int, Process] = {}
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
        # When set, a process's final event is handed to it (as a callable that sends it) instead of
        # sent at once; it must call it once. The audit log calls it when the end row is durable, so
        # the kernel's loop never waits on the disk and a client that saw its answer end can still
        # find the record of it.
        self.defer_final: Callable[[Callable[[], None]], None] | None = None
        make_policy(self.config.policy, **self.config.policy_options)  # fail fast on a bad name

    # ---- the table (any thread, under the lock) -------------------------------------------------

    def new_pid(self) -> int:
        return next(self._pids)

    def admit(self, process: Process, work: Work) -> None:
        """Put a new queued process in the table; the next tick considers it."""
        with self.lock:
            self.table[process.pid] = process
            self.live[process.pid] = process
            self.work[process.pid] = work
            self.residency.models[process.model].active += 1
        self.wake()

    def cancel(
        self, process: Process, reason: str = "cancelled by its owner", error: LLMasOSError | None = None
    ) -> None:
        """End a live process now; its engine sequence (and every KV block) is dropped next tick.
        With `error`, its final event carries it (the client is told why, not just "cancelled")."""
        with self.lock:
            if process.is_terminal:
                return
            work = self.work[process.pid]
            if work.in_engine:
                self._pending_aborts.append((process.model, process.pid))
            self._finish(process, ProcessState.CANCELLED, reason, "cancelled", error)
        self.wake()

    def events(self, pid: int, timeout: float | None = None) -> Iterator[Event]:
        """A process's events until its final one. `timeout` bounds each wait (queue.Empty)."""
        outbox = self.work[pid].events
        while True:
            event = outbox.get(timeout=timeout)
            self.taken(pid, len(event.token_ids))  # out of the queue: its reader has it
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
        """Seconds until `process` gets the engine: the work of everything runnable and at least as
        urgent that is ahead of it, at the model's measured token rate. A process blocked on its
        reader is not ahead: it computes nothing until read, and then queues again."""
        with self.lock:
            ahead = sum(
                self.remaining_tokens(p)
                for p in self.live.values()
                if p.model == process.model
                and p is not process
                and is_runnable(p)
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
        self.chosen_last_tick = 0
        self._run_pending_aborts()
        for model in list(self.residency.models):
            computed += self._tick_model(model)
        return computed

    def changes_at(self) -> float | None:
        """The earliest time at which a model's policy may choose differently with time alone."""
        with self.lock:
            now = self.clock()
            due = (
                policy.changes_at([p for p in self.live.values() if p.model == model], now)
                for model, policy in self._policies.items()
            )
            return min((t for t in due if t is not None), default=None)

    def _tick_model(self, model: str) -> int:
        resident = self.residency.models.get(model)
        if resident is None:
            return 0
        engine = resident.engine
        policy = self._policies.setdefault(
            model, make_policy(self.config.policy, **self.config.policy_options)
        )
        with self.lock:
            # Read under the lock: a process admitted meanwhile was created after any earlier
            # reading, and moving it to running at that earlier time raised (clock went backwards).
            now = self.clock()
            live = [p for p in self.live.values() if p.model == model]
            if not live:
                return 0
            self._hold_for_readers(engine, live, now)
            runnable = [p for p in live if is_runnable(p)]
            chosen = self._within_quotas(policy.select(runnable, engine.max_num_seqs, now))
            self.chosen_last_tick += len(chosen)
            self._switch(engine, live, set(map(id, chosen)), chosen, now)
        start = time.perf_counter()
        step = self._step(engine, model)
        elapsed = time.perf_counter() - start
        with self.lock:
            self._account(model, policy, step, self.clock())
        self.rate(model).observe(step.total_computed_tokens, elapsed)
        self.counters.model_step(model, step.total_computed_tokens, elapsed)
        return step.total_computed_tokens

    # ---- fault isolation: one request's failure ends its process alone ---------------------------

    def _step(self, engine: Engine, model: str) -> StepOutput:
        """One engine step. If it raises, the request that makes it fail is found and failed, and
        the others' step is taken without it."""
        try:
            return engine.step()
        except Exception:
            logger.exception("engine step failed on %s; stepping its requests apart to find the cause", model)
            return self._step_isolating(engine, model)

    def _step_isolating(self, engine: Engine, model: str) -> StepOutput:
        """The failed step again, its running requests apart (`step_apart`)."""
        with self.lock:
            suspects = [
                str(p.pid)
                for p in self.table.values()
                if p.model == model and p.state is ProcessState.RUNNING and self.work[p.pid].in_engine
            ]
        if not suspects:  # nothing runs, yet the step fails: the engine holds no one that can go on
            self._fail_in_engine(engine, model)
            return StepOutput()
        return step_apart(
            engine, suspects, lambda request_id, err: self._fail_request(engine, request_id, err, "step")
        )

    def _fail_in_engine(self, engine: Engine, model: str) -> None:
        with self.lock:
            pids = [p.pid for p in self.table.values() if p.model == model and self.work[p.pid].in_engine]
        for pid in pids:
            self._fail_request(engine, str(pid), RuntimeError("the engine's step failed"), "step")

    def _fail_request(self, engine: Engine, request_id: str, err: Exception, stage: str) -> None:
        """End the process of `request_id` as failed and drop its request from the engine."""
        with self.lock:
            process = self.table.get(int(request_id))
            abort_quietly(engine, request_id)
            if process is None:
                return
            self.work[process.pid].in_engine = False
            if not process.is_terminal:
                fault = engine_fault(err, stage)
                self._finish(process, ProcessState.FAILED, str(fault), "error", fault)

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
        self, engine: Engine, live: list[Process], chosen_ids: set[int], chosen: list[Process], now: float
    ) -> None:
        """Context-switch out the running processes that lost their slot, then let the winners in."""
        losers = [p for p in live if p.state is ProcessState.RUNNING and id(p) not in chosen_ids]
        winner = chosen[0] if chosen else None
        for process in losers:
            request_id = str(process.pid)
            try:
                costs = engine.suspend_costs(request_id)
                stats = engine.stats()
                mode = choose_suspend_mode(
                    costs, self.estimated_wait(process), stats.num_free_blocks / max(stats.num_blocks, 1)
                )
                engine.suspend(request_id, mode)
            except Exception as err:
                logger.exception("suspending pid %d failed", process.pid)
                self._fail_request(engine, request_id, err, "suspend")
                continue
            by = f" by pid {winner.pid} ({winner.priority.label})" if winner else ""
            process.transition(ProcessState.SUSPENDED, f"preempted{by}; KV {mode.value}", now)
            self.counters.preempted(process.app, process.model)
        for process in chosen:
            if process.state is ProcessState.QUEUED:
                self._add(engine, process, now)
            elif process.state is ProcessState.SUSPENDED:
                try:
                    engine.resume(str(process.pid))
                except Exception as err:
                    logger.exception("resuming pid %d failed", process.pid)
                    self._fail_request(engine, str(process.pid), err, "resume")
                    continue
                process.transition(ProcessState.RUNNING, "running (resumed)", now)

    def _add(self, engine: Engine, process: Process, now: float) -> None:
        """Give a queued process's request to the engine; a request it refuses fails alone."""
        work = self.work[process.pid]
        try:
            engine.add(str(process.pid), work.prompt_ids, work.params, cache_namespace=work.cache_namespace)
        except LLMasOSError as err:  # the request's own fault: too long for the pool, say
            self._finish(process, ProcessState.FAILED, str(err), "error", err)
            return
        except Exception as err:
            logger.exception("adding pid %d to the engine failed", process.pid)
            self._fail_request(engine, str(process.pid), err, "add")
            return
        work.in_engine = True
        self._locate(engine, process)
        self.counters.waited(process.app, now - process.created_at)
        process.transition(ProcessState.RUNNING, "running", now)

    @staticmethod
    def _locate(engine: Engine, process: Process) -> None:
        """Record where a cluster engine runs the process (it moves when its node fails)."""
        if isinstance(engine, PlacedEngine):
            process.node = engine.node_of(str(process.pid)) or process.node

    def _account(self, model: str, policy: Policy, step: StepOutput, now: float) -> None:
        for request_id, tokens in step.num_computed_tokens.items():
            process = self.table.get(int(request_id))
            if process is None or process.is_terminal:
                continue
            work = step.work_of(request_id)
            process.record_computed(tokens, work)
            policy.charge(process, work, now)
            self.limiter.record(process.app, tokens, now, pid=process.pid)
            self.counters.computed(process.app, model, tokens)
        for output in step.outputs:
            process = self.table.get(int(output.request_id))
            if process is None or process.is_terminal:
                continue
            process.record_output(len(output.token_ids), now)
            if process.node:
                self._locate(self.residency.models[model].engine, process)
            self.counters.generated(process.app, model, len(output.token_ids))
            work = self.work[process.pid]
            work.emit(Event(process.pid, output.text, tuple(output.token_ids), logprobs=output.logprobs))
            if work.keep_text:
                work.text.append(output.text)
            if output.finished:
                work.in_engine = False
                if output.finish_reason == "error":
                    fault = engine_fault(RuntimeError(output.error or "unknown"), "step")
                    self._finish(process, ProcessState.FAILED, str(fault), "error", fault)
                else:
                    reason = f"finished ({output.finish_reason})"
                    self._finish(process, ProcessState.FINISHED, reason, output.finish_reason)

    def _finish(
        self,
        process: Process,
        state: ProcessState,
        reason: str,
        finish_reason: str | None,
        error: LLMasOSError | None = None,
    ) -> None:
        process.transition(state, reason, self.clock())
        self.live.pop(process.pid, None)
        self.residency.process_ended(process.model)
        self.counters.finished(process.app, process.model, state.value, error)
        work = self.work[process.pid]
        work.error = error
        for observer in self.on_finish:
            try:
                observer(process, work)
            except Exception:  # an observer's bug must not wedge the scheduler
                logger.exception("on_finish observer failed for pid %d", process.pid)
        final = Event(process.pid, finished=True, finish_reason=finish_reason, error=error)
        if self.defer_final is None:
            work.emit(final)
        else:
            self.defer_final(functools.partial(self._emit_late, work, final))
        self._ended.append(process.pid)
        self._forget_old()

    def _emit_late(self, work: Work, event: Event) -> None:
        """Send an event from another thread (under the lock, so a subscription cannot miss it)."""
        with self.lock:
            work.emit(event)

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
            if resident is not None:
                abort_quietly(resident.engine, str(pid))
            self.work[pid].in_engine = False
