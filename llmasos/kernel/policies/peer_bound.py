"""The bound between apps of one latency-sensitive class: no app holds more slots than the most
modest app of the class wants (see `ClassedFairSharePolicy`, fair_share.py)."""

from __future__ import annotations

import math
from collections import defaultdict

from llmasos.kernel.process import Process


class PeerBound:
    """Per app, the slots it may hold in one latency-sensitive class shared with other apps: what the
    most modest app of the class wants (its live processes there, per unit of weight), times the app's
    weight, plus `margin`. Apps that were live in the class within the hold count as still there, with
    the most they wanted meanwhile, so the bound does not lapse in a client's pause between requests.
    """

    def __init__(self, margin: int | None, hold: float | None) -> None:
        self.margin = margin
        self.hold = hold
        # (class, app) -> (when it last wanted `peak`, peak): the most it wanted within the hold
        self._wanted: dict[tuple[int, str], tuple[float, int]] = {}

    def observe(self, live: list[Process], now: float) -> None:
        """Note what each app of a latency-sensitive class wants now; forget what is past the hold."""
        wanted: dict[tuple[int, str], int] = defaultdict(int)
        for process in live:
            if process.priority.is_latency_sensitive:
                wanted[(int(process.priority), process.app)] += 1
        hold = self.hold or 0.0
        for key, (at, _) in list(self._wanted.items()):
            if key not in wanted and now - at >= hold:
                del self._wanted[key]
        for key, count in wanted.items():
            at, peak = self._wanted.get(key, (now, 0))
            if count >= peak or now - at >= hold:
                self._wanted[key] = (now, count)

    def apps(self) -> set[str]:
        """The apps the bound counts as present: live in a latency-sensitive class, or within the hold."""
        return set() if self.margin is None else {app for _, app in self._wanted}

    def wanted(self, priority_class: int, weights: dict[str, float]) -> dict[str, float]:
        """Per app of the class (live, or within the hold), the most it wanted, per unit of weight."""
        return {
            app: peak / weights.get(app, 1.0)
            for (cls, app), (_, peak) in self._wanted.items()
            if cls == priority_class
        }

    def limits(self, priority_class: int, weights: dict[str, float]) -> dict[str, int] | None:
        """Slots per app of `weights` (the class's apps with a live process, and their weights), or
        None when the class has no other app to protect."""
        if self.margin is None:
            return None
        wanted = self.wanted(priority_class, weights)
        if len(wanted) < 2:
            return None
        modest = min(wanted.values())
        return {
            app: max(1, math.floor(modest * weight + 1e-9)) + self.margin for app, weight in weights.items()
        }
