"""The last hour of each ended process's latencies, for charts of p50/p95 over time (the console).

The Prometheus histograms (kernel/latency.py) are cumulative since start, in fixed buckets: right for
a scraper that keeps its own history, but a page that opens now wants "TTFT p95 of app A on model M,
minute by minute, over the last hour" without Prometheus. So each ended process also leaves one small
tuple here (wall time, model, app, TTFT, TPOT), dropped after an hour; the quantiles are exact.
Observed once per process as it ends, like the histograms: nothing is added to the per-token path.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from llmasos.kernel.process import Process, ProcessState

#: How far back the window reaches.
WINDOW_SECONDS = 3600.0
#: A bound on memory whatever the rate: 100,000 tuples are ~10 MB; beyond that the oldest go first.
MAX_SAMPLES = 100_000


@dataclass(frozen=True)
class LatencySample:
    at: float  # wall-clock time the process ended
    model: str
    app: str
    time_to_first_token: float | None  # seconds from admission to the first output token
    time_per_output_token: float | None  # mean seconds between output tokens (two or more)


def quantile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank `q` quantile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class LatencyWindow:
    """Fed by the kernel's on_finish observers; read by `series`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._samples: deque[LatencySample] = deque(maxlen=MAX_SAMPLES)
        self._lock = threading.Lock()

    def observe(self, process: Process, work: object = None) -> None:
        """Record an ended process (the same figures the histograms take, see latency.py)."""
        ttft = tpot = None
        if process.first_token_at is not None:
            ttft = process.first_token_at - process.created_at
        finished = process.state is ProcessState.FINISHED and process.finished_at is not None
        if finished and process.first_token_at is not None and process.tokens_out >= 2:
            tpot = (process.finished_at - process.first_token_at) / (process.tokens_out - 1)
        if ttft is None and tpot is None:
            return
        with self._lock:
            self._samples.append(LatencySample(self.clock(), process.model, process.app, ttft, tpot))

    def samples(self, since: float | None = None) -> list[LatencySample]:
        now = self.clock()
        since = now - WINDOW_SECONDS if since is None else since
        with self._lock:
            while self._samples and self._samples[0].at < now - WINDOW_SECONDS:
                self._samples.popleft()
            return [s for s in self._samples if s.at >= since]

    def series(self, visible: Callable[[str], bool], bucket_seconds: float = 60.0) -> list[dict]:
        """Per (model, app) that `visible(app)` admits: the hour's p50/p95 of TTFT and TPOT, and the
        same per `bucket_seconds` bucket (`points`, oldest first; buckets with no sample are left out)."""
        groups: dict[tuple[str, str], list[LatencySample]] = {}
        for sample in self.samples():
            if visible(sample.app):
                groups.setdefault((sample.model, sample.app), []).append(sample)
        out = []
        for (model, app), samples in sorted(groups.items()):
            buckets: dict[float, list[LatencySample]] = {}
            for s in samples:
                buckets.setdefault(math.floor(s.at / bucket_seconds) * bucket_seconds, []).append(s)
            out.append(
                {
                    "model": model,
                    "app": app,
                    **_summary(samples),
                    "points": [{"t": t, **_summary(b)} for t, b in sorted(buckets.items())],
                }
            )
        return out


def _summary(samples: list[LatencySample]) -> dict:
    ttft = sorted(s.time_to_first_token for s in samples if s.time_to_first_token is not None)
    tpot = sorted(s.time_per_output_token for s in samples if s.time_per_output_token is not None)
    return {
        "ttft_count": len(ttft),
        "ttft_p50": quantile(ttft, 0.5),
        "ttft_p95": quantile(ttft, 0.95),
        "tpot_count": len(tpot),
        "tpot_p50": quantile(tpot, 0.5),
        "tpot_p95": quantile(tpot, 0.95),
    }
