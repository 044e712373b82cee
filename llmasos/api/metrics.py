"""/metrics in Prometheus' text format, read from the kernel at scrape time.

A collector rather than counters updated along the request path: the kernel already keeps every
figure (its counters, the engines' KV pools, the residency manager), so a scrape reads them once
and nothing on the hot path pays for metrics. The latency histograms (kernel/latency.py) are fed
once per process as it ends, from times the process records anyway.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmasos.kernel.process import ProcessState
from llmasos.kernel.snapshots import KernelSnapshot
from llmasos.kernel.syscalls import Syscalls

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class KernelCollector(Collector):
    def __init__(self, syscalls: Syscalls) -> None:
        self.syscalls = syscalls

    def collect(self) -> Iterator[Metric]:
        snap = self.syscalls.metrics_snapshot()
        yield from self._app_metrics(snap.counters["apps"])
        yield from self._model_metrics(snap.counters["models"])
        yield from self._live_metrics(snap)
        yield from self._pii_metrics()
        yield from self._node_metrics(self.syscalls.node_snapshot())

    def _pii_metrics(self) -> Iterator[Metric]:
        """Personal data found, per app, direction and type: counts only, never a value."""
        found = CounterMetricFamily(
            "llmasos_pii_detections",
            "Personal data detected by app, direction and entity type",
            labels=["app", "direction", "type"],
        )
        for (app, direction, entity_type), n in sorted(self.syscalls.pii_counts().items()):
            found.add_metric([app, direction, entity_type], n)
        yield found

    def _node_metrics(self, nodes: list[dict]) -> Iterator[Metric]:
        """The cluster's nodes (`serve --cluster`): up, healthy, live processes, each model's health."""
        if not nodes:
            return
        up = GaugeMetricFamily("llmasos_node_up", "1 while the cluster node is alive", labels=["node"])
        healthy = GaugeMetricFamily(
            "llmasos_node_healthy", "1 if the node is alive and every model it offers loaded", labels=["node"]
        )
        processes = GaugeMetricFamily("llmasos_node_processes", "Live processes on the node", labels=["node"])
        models = GaugeMetricFamily(
            "llmasos_node_model_healthy", "1 if the model loaded on the node", labels=["node", "model"]
        )
        for node in nodes:
            up.add_metric([node["name"]], int(node["alive"]))
            healthy.add_metric([node["name"]], int(node["healthy"]))
            processes.add_metric([node["name"]], node["processes"])
            for model, health in node["models"].items():
                models.add_metric([node["name"], model], int(health["healthy"]))
        yield from (up, healthy, processes, models)

    def _app_metrics(self, apps: dict) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "llmasos_requests", "System calls by app, call and outcome", labels=["app", "call", "outcome"]
        )
        errors = CounterMetricFamily("llmasos_errors", "Errors by app and type", labels=["app", "type"])
        processes = CounterMetricFamily(
            "llmasos_processes_ended", "Ended processes by app and final state", labels=["app", "state"]
        )
        computed = CounterMetricFamily(
            "llmasos_app_tokens_computed", "Prompt and generated tokens computed", labels=["app"]
        )
        generated = CounterMetricFamily("llmasos_app_tokens_generated", "Tokens generated", labels=["app"])
        preempted = CounterMetricFamily("llmasos_app_preemptions", "Times preempted", labels=["app"])
        waited = CounterMetricFamily(
            "llmasos_app_wait_seconds", "Seconds queued before first running", labels=["app"]
        )
        waits = CounterMetricFamily("llmasos_app_waits", "Processes that waited and then ran", labels=["app"])
        for app, c in apps.items():
            for (call, outcome), n in c["calls"].items():
                calls.add_metric([app, call, outcome], n)
            for type_, n in c["errors"].items():
                errors.add_metric([app, type_], n)
            for state, n in c["processes"].items():
                processes.add_metric([app, state], n)
            if not (c["processes"] or c["waits"] or c["tokens_computed"]):
                continue  # never ran on the kernel (the `?` of keyless requests): no token series at 0
            computed.add_metric([app], c["tokens_computed"])
            generated.add_metric([app], c["tokens_generated"])
            preempted.add_metric([app], c["preemptions"])
            waited.add_metric([app], c["wait_seconds_total"])
            waits.add_metric([app], c["waits"])
        yield from (calls, errors, processes, computed, generated, preempted, waited, waits)

    def _model_metrics(self, models: dict) -> Iterator[Metric]:
        computed = CounterMetricFamily(
            "llmasos_model_tokens_computed", "Tokens computed per model", labels=["model"]
        )
        generated = CounterMetricFamily(
            "llmasos_model_tokens_generated", "Tokens generated", labels=["model"]
        )
        steps = CounterMetricFamily("llmasos_engine_steps", "Engine steps", labels=["model"])
        step_seconds = CounterMetricFamily(
            "llmasos_engine_step_seconds", "Seconds spent in engine steps", labels=["model"]
        )
        preempted = CounterMetricFamily("llmasos_model_preemptions", "Context switches out", labels=["model"])
        for model, c in models.items():
            computed.add_metric([model], c["tokens_computed"])
            generated.add_metric([model], c["tokens_generated"])
            steps.add_metric([model], c["steps"])
            step_seconds.add_metric([model], c["step_seconds_total"])
            preempted.add_metric([model], c["preemptions"])
        yield from (computed, generated, steps, step_seconds, preempted)

    def _live_metrics(self, snap: KernelSnapshot) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "llmasos_processes", "Live processes by app, model and state", labels=["app", "model", "state"]
        )
        live = (ProcessState.QUEUED, ProcessState.RUNNING, ProcessState.SUSPENDED, ProcessState.BLOCKED)
        for state in live:
            for (app, model, s), n in snap.live_processes.items():
                if s == state.value:
                    by_state.add_metric([app, model, s], n)
        yield by_state
        resident = GaugeMetricFamily(
            "llmasos_model_resident_bytes", "Loaded models' memory", labels=["model"]
        )
        blocks = GaugeMetricFamily("llmasos_kv_blocks", "KV cache blocks by state", labels=["model", "state"])
        kv_usage = GaugeMetricFamily("llmasos_kv_usage_ratio", "Share of KV blocks in use", labels=["model"])
        hits = CounterMetricFamily(
            "llmasos_prefix_cache_hit_tokens", "Prompt tokens from cache", labels=["model"]
        )
        queries = CounterMetricFamily(
            "llmasos_prefix_cache_query_tokens", "Prompt tokens looked up", labels=["model"]
        )
        for r in snap.resident_models:
            resident.add_metric([r.name], r.memory_bytes)
            stats = snap.kv_stats.get(r.name)
            if stats is None:  # unloaded while the snapshot was taken
                continue
            used = stats.num_blocks - stats.num_free_blocks
            blocks.add_metric([r.name, "used"], used)
            blocks.add_metric([r.name, "free"], stats.num_free_blocks)
            blocks.add_metric([r.name, "cached"], stats.num_cached_blocks)
            kv_usage.add_metric([r.name], used / max(stats.num_blocks, 1))
            hits.add_metric([r.name], stats.prefix_cache_hits)
            queries.add_metric([r.name], stats.prefix_cache_queries)
        yield from (resident, blocks, kv_usage, hits, queries)
        budget = GaugeMetricFamily("llmasos_memory_budget_bytes", "Memory budget for models")
        budget.add_metric([], snap.memory.budget_bytes)
        used = GaugeMetricFamily("llmasos_memory_used_bytes", "Memory held by loaded models")
        used.add_metric([], snap.memory.used_bytes)
        yield from (budget, used)


def registry_for(syscalls: Syscalls) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KernelCollector(syscalls))
    registry.register(syscalls.latency)  # histograms per model and app (kernel/latency.py)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
