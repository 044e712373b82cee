"""Request starts per app, bounded: a token bucket per app, checked before a request's body is read.

A disconnect storm (an app opening ~57 streams a second and dropping each after its first chunk) cost
the calm app 6.64x its p95 stream time while the engine computed under two tokens per dropped stream:
what each request costs is the HTTP side's work (its connection, key lookup, body, admission, audit
rows, cancel), and nothing bounded how many an app with a valid key could start. Now each app may
start `per_minute` requests a minute on average with bursts of `burst`; a request past them is
answered 429 with Retry-After before its body is read. The rates are the app's own
(`requests_per_minute`, `request_burst`) or the server's default (`llmasos serve
--requests-per-minute`), which is generous: an interactive client's pace never meets it.

Once an app is out of requests, a key of it is refused from its digest alone, without the key being
looked up (a refused client that retries at once would otherwise cost a lookup per retry). Refusals
are counted in the metrics per request and audited in aggregate: one row per app and window.

All state is bounded: at most `max_apps` buckets and key digests (the least recently used go first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from llmasos.errors import QuotaExceededError
from llmasos.security.apps import App
from llmasos.security.audit import AuditRecord

#: The metric label of requests refused by an app's request rate.
RATE_LIMITED_CALL = "http.request_rate"


@dataclass(frozen=True)
class RequestRatePolicy:
    """The server's default request rate; an app's own fields, when set, override it."""

    # Requests an app may start a minute; 0: no limit unless the app sets one. `llmasos serve`
    # defaults to 1,200 (20 a second): the benchmark's calm app, two clients streaming back to back,
    # starts about 13 a second on an idle machine, and the disconnect storm started 57.
    per_minute: int = 0
    # Requests an app may start at once after being idle; 0: a second's worth of its rate (at least 1).
    burst: int = 0
    window_seconds: float = 60.0  # refusals of one app are summed into one audit row per window
    max_apps: int = 4096


@dataclass
class RefusalSummary:
    """One window of one app's refused requests: an audit row."""

    app: str
    started: float  # time.time() of the window's start
    seconds: float
    refused: int
    per_minute: int
    burst: int


@dataclass
class _Bucket:
    tokens: float
    updated: float
    per_minute: int
    burst: int
    app: str
    window_start: float = 0.0
    wall_start: float = 0.0
    refused: int = 0

    def refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.per_minute / 60.0)
        self.updated = now

    def retry_after(self) -> float:
        """Seconds until one request fits."""
        return max(0.0, (1.0 - self.tokens) * 60.0 / self.per_minute)


class RequestRateLimiter:
    """Token buckets of request starts, one per app (by identity)."""

    def __init__(self, policy: RequestRatePolicy | None = None, clock: Callable[[], float] = time.monotonic):
        self.policy = policy or RequestRatePolicy()
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._key_apps: OrderedDict[bytes, str] = OrderedDict()  # key digest -> app identity
        self._pending: list[RefusalSummary] = []  # summaries of buckets forgotten to make room

    def rates(self, app: App) -> tuple[int, int]:
        """(requests a minute, burst) for `app`; (0, 0) when it has no limit."""
        per_minute = app.requests_per_minute or self.policy.per_minute
        if per_minute <= 0:
            return 0, 0
        burst = app.request_burst or self.policy.burst or max(1, per_minute // 60)
        return per_minute, burst

    def refuse_key_if_empty(self, digest: bytes | None) -> None:
        """Before a key is looked up: QuotaExceededError when the app it authenticated as last time
        has no request left now (a revoked key is refused all the same, 429 instead of 401)."""
        identity = self._key_apps.get(digest) if digest is not None else None
        bucket = self._buckets.get(identity) if identity is not None else None
        if bucket is None:
            return
        now = self.clock()
        bucket.refill(now)
        if bucket.tokens < 1.0:
            self._refuse(bucket, now)

    def take(self, app: App, digest: bytes | None = None) -> None:
        """Count one request start of `app` (authenticated with the key of `digest`);
        QuotaExceededError when it has none left."""
        per_minute, burst = self.rates(app)
        if per_minute <= 0:
            return
        now = self.clock()
        bucket = self._bucket(app, per_minute, burst, now)
        if digest is not None:
            self._key_apps[digest] = app.identity
            self._key_apps.move_to_end(digest)
            while len(self._key_apps) > self.policy.max_apps:
                self._key_apps.popitem(last=False)
        bucket.refill(now)
        if bucket.tokens < 1.0:
            self._refuse(bucket, now)
        bucket.tokens -= 1.0

    def finished_windows(self, *, everything: bool = False) -> list[RefusalSummary]:
        """Summaries of ended windows with refusals (all open ones with `everything`), each once."""
        now = self.clock()
        done, self._pending = self._pending, []
        for bucket in self._buckets.values():
            if bucket.refused and (everything or now - bucket.window_start >= self.policy.window_seconds):
                done.append(self._summary(bucket, now))
                bucket.refused = 0
        return done

    def _bucket(self, app: App, per_minute: int, burst: int, now: float) -> _Bucket:
        bucket = self._buckets.get(app.identity)
        if bucket is None:
            while len(self._buckets) >= self.policy.max_apps:
                _, old = self._buckets.popitem(last=False)
                if old.refused:
                    self._pending.append(self._summary(old, now))
            bucket = self._buckets[app.identity] = _Bucket(float(burst), now, per_minute, burst, app.name)
        elif (bucket.per_minute, bucket.burst) != (per_minute, burst):  # the app's rates were changed
            bucket.per_minute, bucket.burst = per_minute, burst
            bucket.tokens = min(bucket.tokens, float(burst))
        self._buckets.move_to_end(app.identity)
        return bucket

    def _refuse(self, bucket: _Bucket, now: float) -> None:
        if not bucket.refused:
            bucket.window_start, bucket.wall_start = now, time.time()
        bucket.refused += 1
        retry = bucket.retry_after()
        raise QuotaExceededError(
            f"app {bucket.app!r} starts at most {bucket.per_minute} requests a minute (bursts of "
            f"{bucket.burst}); retry in {retry:.1f} s (an admin can raise it: PATCH /os/apps/{bucket.app} "
            'with {"requests_per_minute": N})',
            retry,
        )

    @staticmethod
    def _summary(bucket: _Bucket, now: float) -> RefusalSummary:
        return RefusalSummary(
            bucket.app,
            bucket.wall_start,
            now - bucket.window_start,
            bucket.refused,
            bucket.per_minute,
            bucket.burst,
        )


def summary_row(summary: RefusalSummary) -> AuditRecord:
    """The audit row of one window of an app's refused requests."""
    return AuditRecord(
        app=summary.app,
        call="http.request_rate",
        outcome="denied",
        allowed=False,
        reason=(
            f"{summary.refused} requests refused in {summary.seconds:.0f} s: past the app's "
            f"{summary.per_minute} requests a minute (bursts of {summary.burst})"
        ),
        duration_s=summary.seconds,
        interface="http",
        ts=summary.started,
    )
