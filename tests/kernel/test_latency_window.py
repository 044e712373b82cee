"""The last hour of latencies behind the console's charts: exact nearest-rank quantiles per model and
app, per minute, and nothing older than the window."""

from __future__ import annotations

from llmasos.kernel.latency_window import WINDOW_SECONDS, LatencyWindow, quantile
from llmasos.kernel.process import PriorityClass, Process, ProcessState


def ended(pid: int, app: str, ttft: float, tpot: float, tokens: int = 5) -> Process:
    p = Process(pid=pid, app=app, model="m", priority=PriorityClass.parse("normal"), created_at=100.0)
    p.first_token_at = 100.0 + ttft
    p.tokens_out = tokens
    p.finished_at = p.first_token_at + tpot * (tokens - 1)
    p.state = ProcessState.FINISHED
    return p


def test_quantiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (quantile(values, 0.5), quantile(values, 0.95), quantile(values, 1.0)) == (50.0, 95.0, 100.0)
    assert quantile([], 0.5) is None and quantile([3.0], 0.95) == 3.0


def test_series_per_app_and_minute_and_the_window_forgets():
    now = [10_000.0]
    window = LatencyWindow(clock=lambda: now[0])
    for i in range(10):
        window.observe(ended(i, "a", ttft=0.1 * (i + 1), tpot=0.01))
    now[0] += 60
    window.observe(ended(10, "b", ttft=2.0, tpot=0.5))
    cancelled = ended(11, "b", ttft=3.0, tpot=9.0)
    cancelled.state = ProcessState.CANCELLED  # its first token counts, its pace does not
    window.observe(cancelled)
    series = {s["app"]: s for s in window.series(lambda app: True)}
    a, b = series["a"], series["b"]
    assert (a["ttft_count"], a["ttft_p50"], a["ttft_p95"]) == (10, 0.5, 1.0)
    assert abs(a["tpot_p50"] - 0.01) < 1e-9 and len(a["points"]) == 1
    assert (b["ttft_count"], b["tpot_count"], b["tpot_p95"]) == (2, 1, 0.5)
    assert [s["app"] for s in window.series(lambda app: app == "b")] == ["b"]
    now[0] += WINDOW_SECONDS - 30  # a's minute is now more than an hour old, b's not
    assert [s["app"] for s in window.series(lambda app: True)] == ["b"]
