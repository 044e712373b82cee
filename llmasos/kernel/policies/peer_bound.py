"""The bound between apps of one latency-sensitive class: no app holds more slots than the most
modest app of the class wants, counted as at least a floor of streams (see `ClassedFairSharePolicy`,
fair_share.py)."""

from __future__ import annotations

import math
from collections import defaultdict

from llmasos.errors import InvalidRequestError
from llmasos.kernel.process import Process

#: Streams every app of a latency-sensitive class may run at once, whatever its peers want, per unit
#: of weight: the most modest want counts as at least this, and an app that wants no more work a step
#: than this many short streams never yields its slots to a peer. Holding an app's second stream back
#: made it wait for the whole of its first (issue 20's disconnect storm: beside a peer with one stream
#: at a time, the calm app's two clients ran one after the other, and 6-12% of its processes waited
#: over 50 ms in the kernel's queue, against 0-1% with the floor), while the peer gained little: a
#: decode step of 4 sequences cost 1.36x one of 2 (SmolLM2, 2-core CPU). A flood is still held to 2
#: beside anyone.
PEER_SLOTS_FLOOR = 2


class PeerBound:
    """Per app, the slots it may hold in one latency-sensitive class shared with other apps: what the
    most modest app of the class wants (its live processes there, per unit of weight), times the app's
    weight, plus `margin`. Apps that were live in the class within the hold count as still there, with
    the most they wanted meanwhile, so the bound does not lapse in a client's pause between requests.

    It also keeps what each app wants in work a step (its live processes' `work_per_token`, summed: a
    stream deep in a long context wants more than one that just began), which decides who yields to
    whom when an app runs ahead (`wanted_work`).
    """

    def __init__(self, margin: int | None, hold: float | None, floor: int = PEER_SLOTS_FLOOR) -> None:
        if margin is not None:
            _refuse_unless_whole("peer_slots_margin", margin, 0, " or None")
        _refuse_unless_whole("peer_slots_floor", floor, 1)
        self.margin = margin
        self.hold = hold
        self.floor = floor
        # (class, app) -> (when it last wanted `peak`, peak): the most it wanted within the hold, in
        # processes and in work a step
        self._wanted: dict[tuple[int, str], tuple[float, float]] = {}
        self._wanted_work: dict[tuple[int, str], tuple[float, float]] = {}

    def observe(self, live: list[Process], now: float) -> None:
        """Note what each app of a latency-sensitive class wants now; forget what is past the hold."""
        wanted: dict[tuple[int, str], int] = defaultdict(int)
        work: dict[tuple[int, str], float] = defaultdict(float)
        for process in live:
            if process.priority.is_latency_sensitive:
                key = (int(process.priority), process.app)
                wanted[key] += 1
                work[key] += process.work_per_token
        for peaks, now_wanted in ((self._wanted, wanted), (self._wanted_work, work)):
            self._note_peaks(peaks, now_wanted, now)

    def _note_peaks(self, peaks: dict, wanted: dict, now: float) -> None:
        hold = self.hold or 0.0
        for key, (at, _) in list(peaks.items()):
            if key not in wanted and now - at >= hold:
                del peaks[key]
        for key, value in wanted.items():
            at, peak = peaks.get(key, (now, 0))
            if value >= peak or now - at >= hold:
                peaks[key] = (now, value)

    def apps(self) -> set[str]:
        """The apps the bound counts as present: live in a latency-sensitive class, or within the hold."""
        return set() if self.margin is None else {app for _, app in self._wanted}

    def wanted(self, priority_class: int, weights: dict[str, float]) -> dict[str, float]:
        """Per app of the class (live, or within the hold), the most processes it wanted, per unit of
        weight."""
        return _per_weight(self._wanted, priority_class, weights)

    def wanted_work(self, priority_class: int, weights: dict[str, float]) -> dict[str, float]:
        """Per app of the class (live, or within the hold), the most work a step it wanted, per unit of
        weight."""
        return _per_weight(self._wanted_work, priority_class, weights)

    def may_hold_back(self, wanted_work: float) -> bool:
        """Whether an app that wants `wanted_work` a step (per unit of weight) may be made to yield
        to its peers: not while it wants no more than the floor's short streams."""
        return self.margin is not None and wanted_work > self.floor

    def limits(self, priority_class: int, weights: dict[str, float]) -> dict[str, int] | None:
        """Slots per app of `weights` (the class's apps with a live process, and their weights), or
        None when the class has no other app to protect."""
        if self.margin is None:
            return None
        wanted = self.wanted(priority_class, weights)
        if len(wanted) < 2:
            return None
        modest = max(min(wanted.values()), self.floor)
        return {
            app: max(1, math.floor(modest * weight + 1e-9)) + self.margin for app, weight in weights.items()
        }


def _refuse_unless_whole(option: str, value: object, least: int, alternatives: str = "") -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
        raise InvalidRequestError(
            f"scheduling option {option} must be a whole number >= {least}{alternatives}, got {value!r}"
        )


def _per_weight(
    peaks: dict[tuple[int, str], tuple[float, float]], priority_class: int, weights: dict[str, float]
) -> dict[str, float]:
    return {
        app: peak / weights.get(app, 1.0) for (cls, app), (_, peak) in peaks.items() if cls == priority_class
    }
