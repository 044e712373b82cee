"""The contract every scheduling policy keeps, and the pieces several policies share.

A policy answers one question per engine step: which live processes should hold the engine's batch
slots, most deserving first. The kernel then suspends the running processes that were not chosen and
admits or resumes the ones that were. After the step it reports what each chosen process actually
computed with `charge`, so policies that share by work (round robin, fair share) see real work, prefill
included, not estimates: the engine's figure for its tokens, in passes through the weights, where a token
that attends to a long context costs more (engine/work_cost.py).

Policies read `Process` objects and never write them (the kernel owns the process table); what a
policy remembers between steps (virtual times, a round-robin line) lives in the policy, keyed by pid
or app, and is pruned as processes leave the table. Select itself never changes what the policy
remembers beyond noticing arrivals and departures, so asking twice gives the same answer.

The kernel's step loop, in order:

    chosen = policy.select(table, slots, now)
    ... suspend / resume / admit, engine.step() ...
    for process, tokens, work in computed:
        process.record_computed(tokens, work)
        policy.charge(process, work, now)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from llmasos.errors import InvalidRequestError
from llmasos.kernel.process import PriorityClass, Process, ProcessState


class Policy(ABC):
    """Base of all policies: validates the arguments and hands `_select` the live processes only."""

    name: ClassVar[str]

    def select(self, processes: Sequence[Process], slots: int, now: float) -> list[Process]:
        """Which live processes hold the batch slots this step: at most `slots`, most deserving first.

        Terminal processes in `processes` are ignored. The answer depends only on the processes, `now`
        and what earlier `charge` calls told the policy, never on the order of `processes`.
        """
        if slots < 0:
            raise ValueError(f"slots must be >= 0, got {slots}")
        live = [p for p in processes if not p.state.is_terminal]
        self._observe(live)
        if slots == 0 or not live:
            return []
        chosen = self._select(live, slots, now)
        assert len(chosen) <= slots, f"{type(self).__name__} chose {len(chosen)} for {slots} slots"
        return chosen

    def charge(self, process: Process, work: float, now: float) -> None:
        """Feedback after a step: `process` had `work` computed in it (its tokens, prefill counted,
        each weighed by the context it attends to: a short-context token is 1)."""
        if not work >= 0:
            raise ValueError(f"charged work must be >= 0, got {work}")
        self._charge(process, work, now)

    def changes_at(self, processes: Sequence[Process], now: float) -> float | None:
        """When `select` over these processes may answer differently with time alone (a hold that
        ends), so that the kernel's loop, finding nothing to run, sleeps until then rather than
        polling; None when only an event (an arrival, a departure, a charge) can change it."""
        return None

    @abstractmethod
    def _select(self, live: list[Process], slots: int, now: float) -> list[Process]:
        """Choose among `live` (non-empty, no terminal process) for `slots` (> 0) slots."""

    def _charge(self, process: Process, work: float, now: float) -> None:  # noqa: B027 - optional hook
        """Policies that do not share by work ignore charges."""

    def _observe(self, live: list[Process]) -> None:  # noqa: B027 - optional hook
        """Sees the live processes before every select (even with no slots), to start remembering
        newcomers and forget leavers; stateless policies have nothing to do."""


def arrival_key(process: Process) -> tuple[float, int]:
    """First come, first served; the pid breaks ties so the order never depends on input order."""
    return (process.created_at, process.pid)


def validate_positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    """Options come from config files and CLI flags, so a bad one is the caller's error."""
    if value is None and allow_none:
        return
    if value is None or not value > 0:
        raise InvalidRequestError(f"scheduling option {name} must be a positive number, got {value!r}")


class Aging:
    """Effective priority that improves one class for every `aging_seconds` a starving process waited.

    Aging is for starvation by more urgent classes only, so it applies only to processes whose base
    class got no slot at all when the policy chose without aging. A process that waits behind older
    processes of its class, or because its app is at its fair share of the class, is being served as
    designed; aging it would let an app jump the classes just by queueing many processes (measured:
    a flooding app took 33% instead of 25% when every waiting process aged). Policies ask
    `effective_class` only for processes of the classes that the first, unaged choice left out.

    The wait counted is the process's *total* time queued or suspended, not the current stretch: a
    process that has earned a better class keeps it while it runs, so it is not promoted for one step
    and demoted the next (which would still starve it in practice), and it finishes. None disables it.
    """

    def __init__(self, aging_seconds: float | None) -> None:
        validate_positive("aging_seconds", aging_seconds, allow_none=True)
        self.aging_seconds = aging_seconds

    @property
    def enabled(self) -> bool:
        return self.aging_seconds is not None

    def effective_class(self, process: Process, now: float) -> int:
        base = int(process.priority)
        if self.aging_seconds is None:
            return base
        boost = int(process.waited_at(now) // self.aging_seconds)
        return max(int(PriorityClass.REALTIME), base - boost)


def is_running(process: Process) -> bool:
    return process.state is ProcessState.RUNNING
