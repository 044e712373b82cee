"""Weighted fair share across apps by virtual time, alone or under priority classes (the default).

Every app has a virtual time: the work the engine computed for it (prefill and decode tokens, each
weighed by the context it attends to, as charged after each step: engine/work_cost.py) divided by its
weight. Slots go, one at a time, to the app with the smallest virtual
time, so over any saturated window each app's tokens approach its weight's share of the total.
Within one step, granting a slot advances the app's *projected* virtual time by one token (the cost
of a decode step), so the slots of a single step are already split in proportion to weight; an app
with fewer runnable processes than its share simply runs out of candidates and the rest of the slots
go to the others (weighted max-min, work-conserving). Prefill chunks make the real charge larger than
the projection; the app's virtual time then runs ahead and it gets fewer slots until the others catch
up, which is why charges, not slot counts, decide the long-run share.

Context switches cost real time (the engine saves or drops a generation's KV state and later restores
or recomputes it), so a running process keeps its slot until its app is more than `switch_tokens`
virtual tokens ahead of the app that would replace it. The oscillation this allows is bounded by
`switch_tokens` per app and does not bias the long-run share.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable, Sequence

from llmasos.errors import InvalidRequestError
from llmasos.kernel.policies.base import Aging, Policy, is_running
from llmasos.kernel.policies.latency_hold import LatencyHold
from llmasos.kernel.policies.peer_bound import PEER_SLOTS_FLOOR, PeerBound
from llmasos.kernel.process import Process


class VirtualClock:
    """Per-app virtual time, and who is active (has a live process) as of the last look."""

    def __init__(self) -> None:
        self._vtime: dict[str, float] = {}
        self._active: frozenset[str] = frozenset()
        # The smallest virtual time among active apps, never decreasing: where an app starts when no
        # app it could be compared with is active.
        self._floor = 0.0

    def vtime(self, app: str) -> float:
        return self._vtime.get(app, self._floor)

    def observe(self, active: set[str]) -> None:
        """Start newly active apps at the minimum virtual time of the apps that stayed active.

        An app that was idle must not come back with credit hoarded while idle (an old, low virtual
        time would let it take every slot until it caught up), and one that left while ahead must not
        come back cleaner than it left; hence max(own, floor).
        """
        stayed = self._active & active
        if stayed:
            self._floor = max(self._floor, min(self._vtime[app] for app in stayed))
        for app in active - self._active:
            self._vtime[app] = max(self._vtime.get(app, self._floor), self._floor)
        self._active = frozenset(active)

    def charge(self, app: str, work: float, weight: float) -> None:
        self._vtime[app] = self.vtime(app) + work / weight


Admit = Callable[[Process], bool]


def allocate_fair(
    candidates: list[Process],
    slots: int,
    clock: VirtualClock,
    projected: dict[str, float],
    switch_tokens: float,
    admit: Admit | None = None,
) -> list[Process]:
    """Grant up to `slots` of `candidates`, one slot at a time, to the app with the least virtual time.

    `projected` carries each app's virtual time plus the slots already granted this step (it is shared
    between calls for the classes of one step). A candidate that `admit` refuses is skipped at no cost
    to its app. Within an app, running processes come first (no switch for nothing), then arrival order.
    """
    queues: dict[str, list[Process]] = defaultdict(list)
    for process in sorted(candidates, key=_within_app_key):
        queues[process.app].append(process)

    def entry(app: str, index: int) -> tuple[float, str, int]:
        process = queues[app][index]
        key = projected.get(app, clock.vtime(app)) - (switch_tokens if is_running(process) else 0.0)
        return (key, app, index)  # the app name breaks ties, so input order never matters

    heap = [entry(app, 0) for app in queues]
    heapq.heapify(heap)
    chosen: list[Process] = []
    while heap and len(chosen) < slots:
        _, app, index = heapq.heappop(heap)
        process = queues[app][index]
        if admit is None or admit(process):
            chosen.append(process)
            projected[app] = projected.get(app, clock.vtime(app)) + 1.0 / process.weight
        if index + 1 < len(queues[app]):
            heapq.heappush(heap, entry(app, index + 1))
    return chosen


def _within_app_key(process: Process) -> tuple[bool, float, int]:
    return (not is_running(process), process.created_at, process.pid)


def _validate_switch_tokens(switch_tokens: float) -> None:
    if not switch_tokens >= 0:
        raise InvalidRequestError(f"scheduling option switch_tokens must be >= 0, got {switch_tokens!r}")


class FairSharePolicy(Policy):
    """Weighted fair share across apps by virtual time on computed tokens (see the module docstring)."""

    name = "fair_share"

    def __init__(self, switch_tokens: float = 32.0) -> None:
        _validate_switch_tokens(switch_tokens)
        self.switch_tokens = switch_tokens
        self.clock = VirtualClock()

    def _observe(self, live: list[Process]) -> None:
        self.clock.observe({p.app for p in live})

    def _select(self, live: list[Process], slots: int, now: float) -> list[Process]:
        return allocate_fair(live, slots, self.clock, {}, self.switch_tokens)

    def _charge(self, process: Process, work: float, now: float) -> None:
        self.clock.charge(process.app, work, process.weight)


#: How much more computed work a background process must be ahead before it yields its slot to
#: another background process, while latency-sensitive work is live (measured in
#: benchmarks/kernel_scheduling.py: with the plain threshold the interactive decode rate fell to 0.6x).
BACKGROUND_SWITCH_FACTOR_UNDER_LATENCY = 16


class _BackgroundCap:
    """Admits latency-sensitive processes always, and at most `limit` others (None: no limit).

    Aged background work (moved up a class by `Aging`) gets one slot even when the limit is 0 or
    already used up by fresher work: that slot is what keeps the guard from starving it.
    """

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self.aged_floor_used = False

    def admit(self, process: Process, aged: bool) -> bool:
        if process.priority.is_latency_sensitive or self.left is None:
            return True
        if self.left > 0:
            self.left -= 1
            self.aged_floor_used |= aged
            return True
        if aged and not self.aged_floor_used:
            self.aged_floor_used = True
            return True
        return False


def _admitter(
    cap: _BackgroundCap,
    limits: dict[str, int] | None,
    class_of: Callable[[Process], int],
    ahead: Callable[[str, list[str]], bool],
    wanted: dict[str, float],
    may_hold_back: Callable[[float], bool],
) -> Admit:
    """Admits a process of one class's group while its app is within `limits` (the peer bound) and not
    `ahead` of the peers granted a slot so far that want less work a step than it does (`wanted`; an
    app whose want `may_hold_back` refuses is never held back so), and the background cap has room;
    an admitted process counts against both. (Only granted peers hold an app back: one whose
    processes cannot run this step must not keep the others waiting for it.)"""
    held: dict[str, int] = defaultdict(int)

    def admit(process: Process) -> bool:
        app = process.app
        want = wanted.get(app, 0.0)
        granted_peers = (
            [p for p, n in held.items() if n and p != app and wanted.get(p, 0.0) < want]
            if may_hold_back(want)
            else []
        )
        if limits is not None and (held[app] >= limits[app] or ahead(app, granted_peers)):
            return False
        if not cap.admit(process, aged=class_of(process) < int(process.priority)):
            return False
        held[process.app] += 1
        return True

    return admit


class ClassedFairSharePolicy(FairSharePolicy):
    """The default: priority classes on top (with aging), weighted fair share inside each class.

    Classes are served strictly, most urgent first, each by fair share among its apps (one virtual
    time per app across classes). Aging (see `Aging`) moves a waiting process up one class per
    `aging_seconds` waited when its class got no slot at all, so nothing starves, while an app that
    floods the queue gains nothing by it: its class is served, and its app gets its share of that.

    Latency guard: while any realtime or interactive process is live, processes of lower base classes
    get at most `background_slots_under_latency` slots, even if slots stay empty. Decoding is
    memory-bound, so a step costs roughly the weights read once plus every sequence's KV cache read and
    every newcomer's prefill chunk: the step grows with the batch, and each token of the urgent process
    waits for the whole step. Capping background work keeps the urgent process's time to first token
    and decode rate near what it gets on an idle engine, at the cost of background throughput while
    urgent work is live. The cap counts base classes, so aging reorders background work (aged first)
    but lifts the cap by one slot at most: aged work always gets that one, so with a cap of 0 (the
    default) background work waits while urgent work runs, until it has waited `aging_seconds`.
    None: no guard.

    The guard holds for up to `latency_hold_seconds` after the last urgent process ended: an interactive
    client streaming back to back sends its next request milliseconds after its last one ended, and
    background work let in meanwhile cost that request a step of background prefills (or resumes)
    and then their suspensions (issue 20: 16 never-read streams took 1.5x the interactive app's
    tokens and doubled its p95 stream time). How long, within that, is learned from how soon urgent
    work came back the last few times (`LatencyHold`): a hold bridges short pauses, and costs
    background work little when urgent work goes away for longer. None: the guard ends with the last
    urgent process.

    Between apps of one latency-sensitive class, the same cost holds: an app's every extra sequence
    in the batch lengthens the step that each token of the others waits for. Fair share alone gives
    slots away when there are more than the class wants (work-conserving), so an app with 16 streams
    beside one with 2 held 16 slots to its 2, a batch of 18 (issue 20, `abuse.py --attackers-class
    same`). So while two or more apps of a realtime or interactive class are live (or were within the
    hold), each holds at most what the most modest of them wants (counted as at least
    `peer_slots_floor` streams), per unit of weight, times its own weight, plus `peer_slots_margin`;
    the slots left go to the classes below, as ever. And an app more
    than `switch_tokens` of virtual time ahead of a peer served in the same step that wants less work a
    step than it does (its live processes' `work_per_token`, summed: two streams deep in long contexts
    want more than two that just began) yields its slots until that peer catches up, where an app in a
    pause within the hold keeps its virtual time: work done in a peer's pauses counts, so the shares are
    by app over time, not only by slots a step. An app that wants no more work than its peers, or no
    more than `peer_slots_floor` short streams do, never yields to them: it gets all it wants
    (max-min; peer_bound.py says why the floor); a peer that cannot use its slots (a storm of streams
    dropped after their first token) falls behind in virtual time, and waiting for it to catch up only
    left slots empty (issue 20: 1.7x the calm app's p95 stream time). Virtual time counts work, so an
    app whose tokens attend to thousands of positions runs ahead after a few of them and yields the
    steps that its attention would have lengthened for everyone (issue 20's never-reading client: 2.1x
    the calm app's p95 stream time when charged by tokens). An app alone in its class, and the
    throughput classes (normal, batch), are not bounded. None: no bound.
    """

    name = "classed_fair_share"

    def __init__(
        self,
        aging_seconds: float | None = 20.0,
        switch_tokens: float = 32.0,
        # Measured on SmolLM2 with 32 batch streams on a 2-core CPU (benchmarks/kernel_scheduling.py): a
        # cap of 4 left the interactive decode rate at 0.41x idle, a cap of 1 between 0.56x and 0.94x
        # from run to run: there a decode step of 2 sequences costs 1.5x one of 1 (the int4 GEMMs are
        # compute-bound at these sizes), so any background sequence beside the urgent one costs it a third.
        background_slots_under_latency: int | None = 0,
        # A quarter second: the pause between an interactive client's streams on a loaded 2-core box
        # (its [DONE] read, the next request sent, authenticated, tokenized and admitted) is tens of
        # milliseconds; background work loses at most this much each time urgent work goes quiet.
        latency_hold_seconds: float | None = 0.25,
        peer_slots_margin: int | None = 0,
        peer_slots_floor: int = PEER_SLOTS_FLOOR,
    ) -> None:
        super().__init__(switch_tokens)
        self._peers = PeerBound(peer_slots_margin, latency_hold_seconds, peer_slots_floor)
        self.peer_slots_margin = peer_slots_margin
        self.peer_slots_floor = peer_slots_floor
        if latency_hold_seconds is not None and not (
            isinstance(latency_hold_seconds, int | float)
            and math.isfinite(latency_hold_seconds)
            and latency_hold_seconds >= 0
        ):
            raise InvalidRequestError(
                "scheduling option latency_hold_seconds must be a number >= 0 or None, "
                f"got {latency_hold_seconds!r}"
            )
        self.latency_hold_seconds = latency_hold_seconds
        self._hold = LatencyHold(latency_hold_seconds)
        if background_slots_under_latency is not None and not (
            isinstance(background_slots_under_latency, int) and background_slots_under_latency >= 0
        ):
            raise InvalidRequestError(
                "scheduling option background_slots_under_latency must be a whole number >= 0 or None, "
                f"got {background_slots_under_latency!r}"
            )
        self.aging = Aging(aging_seconds)
        self.background_slots_under_latency = background_slots_under_latency

    def _observe(self, live: list[Process]) -> None:
        """The clock is told who is active in `_select`, which knows the time (see `PeerBound`)."""

    def _select(self, live: list[Process], slots: int, now: float) -> list[Process]:
        def base_class(process: Process) -> int:
            return int(process.priority)

        guarded = self._guarded(live, now)
        self._peers.observe(live, now)
        # An app in a client's pause between requests (within the hold) keeps its virtual time, so the
        # peer that ran meanwhile stays ahead of it rather than both restarting level.
        self.clock.observe({p.app for p in live} | self._peers.apps())
        chosen = self._by_class(live, slots, base_class, guarded)
        served = {p.priority for p in chosen}
        if not self.aging.enabled or all(p.priority in served for p in live):
            return chosen  # no class was left out, so none is starving

        def aged_class(process: Process) -> int:
            if process.priority in served:
                return int(process.priority)
            return self.aging.effective_class(process, now)

        return self._by_class(live, slots, aged_class, guarded)

    def _guarded(self, live: list[Process], now: float) -> bool:
        """Whether the latency guard applies: urgent work is live, or was within the hold (see
        `LatencyHold`; noting arrivals and departures: asking twice still gives the same answer)."""
        return self._hold.guarded(any(p.priority.is_latency_sensitive for p in live), now)

    def changes_at(self, processes: Sequence[Process], now: float) -> float | None:
        """When the latency hold ends, while it alone holds background work back (no urgent process
        is live: one that is ends by an event). Aging could let a process in slightly sooner within
        the hold; the hold's end bounds that delay to `latency_hold_seconds`."""
        ends_at = self._hold.ends_at
        if not processes or ends_at is None:
            return None
        if any(p.priority.is_latency_sensitive for p in processes):
            return None
        return ends_at if now < ends_at else None

    def _by_class(
        self, live: list[Process], slots: int, class_of: Callable[[Process], int], guarded: bool
    ) -> list[Process]:
        """Classes strictly in order, fair share inside each, background capped while the guard holds."""
        by_class: dict[int, list[Process]] = defaultdict(list)
        for process in live:
            by_class[class_of(process)].append(process)
        cap = _BackgroundCap(self.background_slots_under_latency if guarded else None)
        projected: dict[str, float] = {}
        chosen: list[Process] = []
        for effective_class in sorted(by_class):
            room = slots - len(chosen)
            if room == 0:
                break
            group = by_class[effective_class]
            switch = self.switch_tokens
            if guarded and not any(p.priority.is_latency_sensitive for p in group):
                # While urgent work runs, background slots are few and each switch between background
                # processes costs a context switch (and often a prefill) that the urgent process waits
                # for inside the same steps: rotate them far less often.
                switch *= BACKGROUND_SWITCH_FACTOR_UNDER_LATENCY

            weights: dict[str, float] = defaultdict(float)
            for process in group:  # one weight per app; the largest, should its processes differ
                weights[process.app] = max(weights[process.app], process.weight)
            limits = self._peers.limits(effective_class, weights)
            wanted = self._peers.wanted_work(effective_class, weights)
            ahead = self._ahead_of_peers(projected)
            admit = _admitter(cap, limits, class_of, ahead, wanted, self._peers.may_hold_back)
            chosen += allocate_fair(group, room, self.clock, projected, switch, admit)
        return chosen

    def _ahead_of_peers(self, projected: dict[str, float]) -> Callable[[str, list[str]], bool]:
        """Whether an app is more than `switch_tokens` of virtual time ahead of the one of `peers` that
        is furthest behind, counting the slots granted so far this step."""

        def vtime(app: str) -> float:
            return projected.get(app, self.clock.vtime(app))

        return lambda app, peers: bool(peers) and vtime(app) - min(map(vtime, peers)) > self.switch_tokens
