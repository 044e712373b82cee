"""The system calls through which interfaces start, stop, preload and read the kernel (no reach-through)."""

from __future__ import annotations

import pytest

from llmasos.engine.sampling import SamplingParams
from llmasos.errors import PermissionDeniedError
from llmasos.kernel.snapshots import MemoryUse, ResidentModelInfo
from llmasos.security.apps import App
from tests.kernel.test_kernel import make_kernel


def test_resident_models_and_memory_follow_what_is_loaded() -> None:
    kernel, sys, _ = make_kernel(budget=10_000, sizes={"m": 3000})
    app = App("a")
    assert sys.resident_models() == []
    assert sys.memory_budget() == MemoryUse(budget_bytes=10_000, used_bytes=0)
    process = sys.generate(app, "m", "hello", SamplingParams(max_tokens=3, temperature=0))
    assert sys.resident_models() == [ResidentModelInfo("m", memory_bytes=3000, active_processes=1)]
    keep_alive = kernel.residency.keep_alive_seconds
    assert sys.resident_models()[0].expires_in_seconds == keep_alive  # in use: all of it, once idle
    assert sys.metrics_snapshot().live_processes == {("a", "m", "queued"): 1}
    kernel.tick()
    snap = sys.metrics_snapshot()
    assert snap.live_processes == {("a", "m", "running"): 1}
    assert snap.memory == MemoryUse(budget_bytes=10_000, used_bytes=3000)
    assert set(snap.kv_stats) == {"m"} and snap.kv_stats["m"].num_running == 1
    kernel.run_until_idle()
    assert sys.status(app, process.pid)["state"] == "finished"
    snap = sys.metrics_snapshot()
    assert snap.live_processes == {}
    assert snap.counters["apps"]["a"]["calls"][("generate", "finished")] == 1
    assert snap.resident_models == [ResidentModelInfo("m", 3000, 0)]  # kept loaded, now idle
    assert 0 <= sys.resident_models()[0].expires_in_seconds <= keep_alive


def test_start_and_stop_run_the_kernels_loop() -> None:
    _, sys, _ = make_kernel()
    assert not sys.is_running
    sys.start()
    try:
        assert sys.is_running
    finally:
        sys.stop()
    assert not sys.is_running


def test_preload_loads_checks_the_capability_and_is_counted() -> None:
    _, sys, engines = make_kernel()
    admin = App("admin", capabilities=("admin",))
    sys.preload(admin, "m")
    assert [r.name for r in sys.resident_models()] == ["m"] and set(engines) == {"m"}
    with pytest.raises(PermissionDeniedError, match="model:other"):
        sys.preload(App("narrow", capabilities=("model:m",)), "other")
    assert "other" not in engines
    calls = sys.metrics_snapshot().counters["apps"]
    assert calls["admin"]["calls"][("preload", "ok")] == 1
    assert calls["narrow"]["calls"][("preload", "denied")] == 1


def test_a_preloaded_model_is_unloaded_when_idle_unless_kept() -> None:
    kernel, sys, _ = make_kernel()
    admin = App("admin", capabilities=("admin",))
    sys.preload(admin, "kept", keep=True)
    sys.preload(admin, "passing")
    kernel.residency.clock.now += 10 * kernel.residency.keep_alive_seconds
    kernel.residency.unload_expired()
    assert [r.name for r in sys.resident_models()] == ["kept"]
