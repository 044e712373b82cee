"""How long the latency guard holds background work back after the last urgent process ended.

An interactive client streaming back to back sends its next request tens of milliseconds after its
last one ended; background work let in meanwhile costs that request a step of prefills (or resumes)
and then their suspensions. A hold that bridges those pauses costs background work the whole hold
every time urgent work goes quiet for longer, though: with a fixed 0.25 s hold, background work lost
34% of its throughput beside chats that came and went (benchmarks/kernel_scheduling.py --only-hold).
So the hold learns how soon urgent work came back the last few times, and holds for a margin over
the longest of those returns that the hold could bridge, never longer than its most.
"""

from __future__ import annotations

from collections import deque

#: How many of urgent work's recent returns the hold learns from.
RETURNS_REMEMBERED = 8
#: The hold lasts this many times the longest recent return that came within its most: a loaded
#: server's pauses vary by step (tens of milliseconds), and a pause the hold misses costs the urgent
#: request what the hold is for.
RETURN_MARGIN = 2.0
#: The shortest hold: about two engine steps of the default model on a small CPU, so that a request
#: already on its way when urgent work ends still finds the guard up.
MIN_HOLD_SECONDS = 0.02


class LatencyHold:
    """Whether the guard holds at `now`, from when urgent work was last seen and how soon it came back
    before. `most` (seconds) bounds the hold; None: no hold at all. Until urgent work has come back
    twice, the hold is `most`."""

    def __init__(self, most: float | None) -> None:
        self.most = most
        self._seen_at: float | None = None  # the last select that saw urgent work
        self._quiet = False  # whether a select has seen no urgent work since then
        self._returns: deque[float] = deque(maxlen=RETURNS_REMEMBERED)

    def guarded(self, urgent_live: bool, now: float) -> bool:
        """Note whether urgent work is live at `now`; whether the guard applies. Asking twice at one
        time gives the same answer (a return is noted once)."""
        if urgent_live:
            if self._quiet and self._seen_at is not None:
                self._returns.append(now - self._seen_at)
            self._quiet = False
            self._seen_at = now
            return True
        if self.most is None or self._seen_at is None:
            return False
        self._quiet = True
        return now - self._seen_at < self.seconds

    @property
    def ends_at(self) -> float | None:
        """When the hold ends if urgent work does not come back first; None: no hold to end."""
        if self.most is None or self._seen_at is None:
            return None
        return self._seen_at + self.seconds

    @property
    def seconds(self) -> float:
        """The hold now: a margin over the recent returns it could bridge, within [MIN, most]."""
        most = self.most or 0.0
        if len(self._returns) < 2:
            return most
        bridged = [gap for gap in self._returns if gap < most]
        if not bridged:  # urgent work came back later than the hold every time: it only cost
            return min(most, MIN_HOLD_SECONDS)
        return min(most, max(MIN_HOLD_SECONDS, RETURN_MARGIN * max(bridged)))
