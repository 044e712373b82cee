"""Admission and backpressure: bounded queues, token-rate quotas, and wait estimates.

A process that cannot be queued is refused at once with the reason and a retry-after estimate,
never left to hang. Waits are estimated from the measured service rate: a queued process waits
for the work ahead of it (tokens of processes of its class or more urgent) to be computed at the
rate the engine has been computing tokens, and a refused one is told when that queue will have
drained enough for it to fit.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

from llmasos.errors import QuotaExceededError


@dataclass(frozen=True)
class QueueLimits:
    """Bounds on waiting work. Zero means unlimited."""

    max_queued_total: int = 256
    max_queued_per_app: int = 64


class TokenRateLimiter:
    """Tokens per app over a rolling 60-second window."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._events: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def used(self, app: str, now: float) -> int:
        events = self._events[app]
        while events and events[0][0] <= now - self.WINDOW:
            events.popleft()
        return sum(n for _, n in events)

    def retry_after(self, app: str, limit: int, tokens: int, now: float) -> float | None:
        """Seconds until `tokens` more fit under `limit`, or None if they fit now."""
        if limit <= 0:
            return None
        if tokens > limit:
            return float("inf")
        used = self.used(app, now)
        if used + tokens <= limit:
            return None
        excess = used + tokens - limit
        for at, n in self._events[app]:
            excess -= n
            if excess <= 0:
                return max(0.0, at + self.WINDOW - now)
        return self.WINDOW

    def record(self, app: str, tokens: int, now: float) -> None:
        if tokens:
            self._events[app].append((now, tokens))


class ServiceRate:
    """Tokens the engine computes per second, smoothed over recent ticks."""

    def __init__(self, initial: float = 50.0, smoothing: float = 0.1) -> None:
        self.tokens_per_second = initial
        self.smoothing = smoothing

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens > 0 and seconds > 0:
            rate = tokens / seconds
            self.tokens_per_second += self.smoothing * (rate - self.tokens_per_second)

    def seconds_for(self, tokens: float) -> float:
        return tokens / max(self.tokens_per_second, 1e-6)


def refuse_if_full(
    app: str,
    queued_for_app: int,
    queued_total: int,
    limits: QueueLimits,
    app_max_queued: int,
    tokens_ahead: float,
    rate: ServiceRate,
) -> None:
    """Raise QuotaExceededError when a new process of `app` would overflow a queue bound."""
    bounds = [b for b in (limits.max_queued_per_app, app_max_queued) if b > 0]
    per_app = min(bounds, default=0)
    retry = max(1.0, rate.seconds_for(tokens_ahead))
    if per_app and queued_for_app >= per_app:
        raise QuotaExceededError(
            f"app {app!r} already has {queued_for_app} processes queued (limit {per_app}); "
            f"retry in about {retry:.0f} s",
            retry,
        )
    if limits.max_queued_total and queued_total >= limits.max_queued_total:
        raise QuotaExceededError(
            f"the system queue is full ({queued_total} processes); retry in about {retry:.0f} s",
            retry,
        )
