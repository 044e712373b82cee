"""Latency histograms in /metrics per model and app: queue wait, time to first token, inter-token time,
end to end; read with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmasos.kernel.latency import LATENCY_BUCKETS, LatencyHistograms
from llmasos.kernel.process import Process, ProcessState

NAMES = (
    "llmasos_queue_wait_seconds",
    "llmasos_time_to_first_token_seconds",
    "llmasos_inter_token_seconds",
    "llmasos_end_to_end_seconds",
)


def histograms(text: str) -> dict[tuple[str, str, str], dict[str, float]]:
    """(histogram, model, app) -> {"count": n, "sum": s, "le=B": cumulative count}."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            key = (family.name, sample.labels["model"], sample.labels["app"])
            suffix = sample.name.removeprefix(family.name)
            field = {"_count": "count", "_sum": "sum"}.get(suffix, f"le={sample.labels.get('le')}")
            out.setdefault(key, {})[field] = sample.value
    return out


def ended_process(state: ProcessState, tokens_out: int) -> Process:
    """Admitted at 10.0, ran from 10.5, first token at 11.0, ended at 13.0."""
    process = Process(pid=1, app="a", model="m", priority="normal", created_at=10.0, tokens_in=3)
    process.transition(ProcessState.RUNNING, "running", 10.5)
    process.record_output(1, 11.0)
    process.record_output(tokens_out - 1, 13.0)
    process.transition(state, "ended", 13.0)
    return process


def test_each_histogram_measures_its_stretch_of_a_process() -> None:
    latency = LatencyHistograms()
    latency.observe(ended_process(ProcessState.FINISHED, tokens_out=5))
    latency.observe(ended_process(ProcessState.CANCELLED, tokens_out=3))
    registry = CollectorRegistry()
    registry.register(latency)
    seen = histograms(generate_latest(registry).decode())
    assert seen[("llmasos_queue_wait_seconds", "m", "a")]["sum"] == 2 * 0.5
    assert seen[("llmasos_time_to_first_token_seconds", "m", "a")]["sum"] == 2 * 1.0
    # Only the finished one: end to end 3 s, and 2 s over the 4 gaps between its 5 tokens.
    end_to_end = seen[("llmasos_end_to_end_seconds", "m", "a")]
    assert (end_to_end["count"], end_to_end["sum"]) == (1.0, 3.0)
    inter = seen[("llmasos_inter_token_seconds", "m", "a")]
    assert (inter["count"], inter["sum"], inter["le=0.25"], inter["le=0.5"]) == (1.0, 0.5, 0.0, 1.0)
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 60.0


def test_metrics_count_requests_per_model_and_app_after_they_end(tiny_server) -> None:
    admin = tiny_server.client()
    other = tiny_server.client(tiny_server.new_app("timed"))
    before = histograms(admin.get("/metrics").text)
    assert not any(name in NAMES for name, _, _ in before)  # nothing observed yet: no series
    for client, n in ((admin, 2), (other, 1)):
        for _ in range(n):
            body = {"model": "tiny", "prompt": "a", "max_tokens": 4, "temperature": 0}
            assert client.post("/v1/completions", json=body).status_code == 200
    seen = histograms(admin.get("/metrics").text)
    for name in NAMES:
        admin_series, other_series = seen[(name, "tiny", "admin")], seen[(name, "tiny", "timed")]
        assert (admin_series["count"], other_series["count"]) == (2.0, 1.0), name
        assert admin_series["le=+Inf"] == 2.0 and admin_series["sum"] > 0
    ttft = seen[("llmasos_time_to_first_token_seconds", "tiny", "admin")]["sum"]
    assert seen[("llmasos_end_to_end_seconds", "tiny", "admin")]["sum"] >= ttft
