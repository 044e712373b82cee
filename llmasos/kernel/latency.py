"""Latency histograms per model and app: queue wait, time to first token, time between output tokens,
end to end. Prometheus histograms (buckets from 1 ms to 60 s), exported by `/metrics`.

Observed once per process, when it ends (the kernel's `on_finish`, under its lock), from the times
the process itself records: nothing is added to the per-token path. So the inter-token figure is
each request's mean gap between its output tokens (first token to last, over the tokens between:
what vLLM calls time per output token), not every single gap.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from llmasos.kernel.process import Process, ProcessState
from llmasos.kernel.work import Work

#: 1 ms to 60 s: a decode step of a small model on a fast box to a long answer of a big one on a slow one.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
    60.0,
)
LABELS = ("model", "app")


def _histogram(name: str, doc: str) -> Histogram:
    return Histogram(name, doc, LABELS, buckets=LATENCY_BUCKETS, registry=None)


class LatencyHistograms(Collector):
    """The four histograms, fed by `observe` and read by a Prometheus registry (`collect`)."""

    def __init__(self) -> None:
        self.queue_wait = _histogram(
            "llmasos_queue_wait_seconds", "Seconds from admission until a process first ran"
        )
        self.time_to_first_token = _histogram(
            "llmasos_time_to_first_token_seconds", "Seconds from admission to the first output token"
        )
        self.inter_token = _histogram(
            "llmasos_inter_token_seconds",
            "Mean seconds between output tokens of each request that made at least two",
        )
        self.end_to_end = _histogram(
            "llmasos_end_to_end_seconds", "Seconds from admission to the end of each finished request"
        )
        self._by_labels: dict[tuple[str, str], tuple] = {}

    def observe(self, process: Process, work: Work | None = None) -> None:
        """Record an ended process's latencies (the kernel's on_finish observer)."""
        queue_wait, first_token, inter_token, end_to_end = self._series(process.model, process.app)
        if process.started_at is not None:
            queue_wait.observe(process.started_at - process.created_at)
        if process.first_token_at is not None:
            first_token.observe(process.first_token_at - process.created_at)
        if process.state is not ProcessState.FINISHED or process.finished_at is None:
            return  # a cancelled or failed request's duration says nothing about serving speed
        end_to_end.observe(process.finished_at - process.created_at)
        if process.first_token_at is not None and process.tokens_out >= 2:
            inter_token.observe((process.finished_at - process.first_token_at) / (process.tokens_out - 1))

    def _series(self, model: str, app: str) -> tuple[Histogram, Histogram, Histogram, Histogram]:
        """The four histograms' series of (model, app), looked up once: `labels()` takes a lock and
        was half the cost of an observation."""
        series = self._by_labels.get((model, app))
        if series is None:
            series = self._by_labels[(model, app)] = tuple(
                h.labels(model, app)
                for h in (self.queue_wait, self.time_to_first_token, self.inter_token, self.end_to_end)
            )
        return series

    def collect(self) -> Iterator[Metric]:
        for histogram in (self.queue_wait, self.time_to_first_token, self.inter_token, self.end_to_end):
            yield from histogram.collect()
