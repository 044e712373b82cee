"""Policies that order processes one by one: first come first served, strict priority, round robin.

Each `select` is one sort of the live processes, O(n log n).
"""

from __future__ import annotations

import itertools

from llmasos.kernel.policies.base import Aging, Policy, arrival_key, validate_positive
from llmasos.kernel.process import Process


class FifoPolicy(Policy):
    """Arrival order. A running process is never displaced by a later one, so it runs to the end."""

    name = "fifo"

    def _select(self, live: list[Process], slots: int, now: float) -> list[Process]:
        return sorted(live, key=arrival_key)[:slots]


class PriorityPolicy(Policy):
    """Strict priority classes, first come first served within a class, with aging.

    A more urgent process takes the slot of a less urgent one at once. Aging (see `Aging`) improves
    the effective class of a waiting process whose class got no slot at all by one per `aging_seconds`
    waited, so a batch process under a constant flood of realtime work reaches the realtime class and,
    being older than the flood, runs.
    """

    name = "priority"

    def __init__(self, aging_seconds: float | None = 20.0) -> None:
        self.aging = Aging(aging_seconds)

    def _select(self, live: list[Process], slots: int, now: float) -> list[Process]:
        chosen = sorted(live, key=lambda p: (p.priority, *arrival_key(p)))[:slots]
        served = {p.priority for p in chosen}
        if not self.aging.enabled or all(p.priority in served for p in live):
            return chosen  # no class was left out, so none is starving

        def aged_key(process: Process) -> tuple[int, float, int]:
            starving = process.priority not in served
            effective = self.aging.effective_class(process, now) if starving else int(process.priority)
            return (effective, *arrival_key(process))

        return sorted(live, key=aged_key)[:slots]


class RoundRobinPolicy(Policy):
    """Each process runs for `quantum_tokens` computed tokens, then goes to the back of the line (tokens
    of work, as charged: one that attends to a long context weighs more).

    The line is a ticket per pid: a newcomer draws the next ticket (in arrival order, so newcomers of
    one step line up first come first served), and so does a process when its quantum is used up.
    The first `slots` tickets run. The quantum is counted from charges, prefill included, so a long
    prompt uses up its holder's turn like any other work.
    """

    name = "round_robin"

    def __init__(self, quantum_tokens: int = 64) -> None:
        validate_positive("quantum_tokens", quantum_tokens)
        self.quantum_tokens = quantum_tokens
        self._tickets = itertools.count()
        self._ticket: dict[int, int] = {}  # pid -> place in line
        self._used: dict[int, float] = {}  # pid -> work computed in its current turn

    def _observe(self, live: list[Process]) -> None:
        pids = {p.pid for p in live}
        for pid in [pid for pid in self._ticket if pid not in pids]:
            del self._ticket[pid]
            self._used.pop(pid, None)
        for process in sorted((p for p in live if p.pid not in self._ticket), key=arrival_key):
            self._ticket[process.pid] = next(self._tickets)

    def _select(self, live: list[Process], slots: int, now: float) -> list[Process]:
        return sorted(live, key=lambda p: self._ticket[p.pid])[:slots]

    def _charge(self, process: Process, work: float, now: float) -> None:
        if process.pid not in self._ticket:  # not in the line (never seen, or gone): nothing to account
            return
        used = self._used.get(process.pid, 0) + work
        if used >= self.quantum_tokens:
            self._ticket[process.pid] = next(self._tickets)
            used = 0
        self._used[process.pid] = used
