"""Keep-alive per model and per request, load and unload on request, and which model a service uses:
the residency system calls on a kernel with fake engines and a fake clock."""

from __future__ import annotations

import pytest

from llmasos.errors import ModelNotFoundError, PermissionDeniedError
from llmasos.security.apps import App
from llmasos.settings import Settings
from tests.kernel.test_kernel import make_kernel, params

ADMIN = App("admin", capabilities=("admin",))


def idle_for(kernel, seconds: float) -> list[str]:
    kernel.residency.clock.now += seconds
    return kernel.residency.unload_expired()


def loaded(sys) -> list[str]:
    return [r.name for r in sys.loaded_models(ADMIN)]


def test_a_model_expires_after_its_own_keep_alive_counted_from_its_last_process_end() -> None:
    kernel, sys, _ = make_kernel()
    kernel.residency.keep_alive_seconds = 300.0
    kernel.residency.model_keep_alive = {"short": 10.0}
    app = App("a")
    sys.generate(app, "short", "hello", params(3))
    sys.generate(app, "long", "hello", params(3))
    kernel.residency.clock.now += 1000  # queued this long: in use, so nothing expires
    assert kernel.residency.unload_expired() == []
    kernel.run_until_idle()  # the processes end now; keep-alive counts from here
    assert idle_for(kernel, 9) == []
    assert idle_for(kernel, 2) == ["short"]
    assert loaded(sys) == ["long"] and sys.loaded_models(ADMIN)[0].keep_alive_seconds == 300.0
    assert idle_for(kernel, 300) == ["long"]


def test_a_request_keep_alive_of_zero_unloads_once_idle_and_minus_one_keeps_it() -> None:
    kernel, sys, _ = make_kernel()
    app = App("a")
    sys.generate(app, "gone", "hello", params(2))
    sys.set_keep_alive(app, "gone", 0)
    sys.generate(app, "kept", "hello", params(2))
    sys.set_keep_alive(app, "kept", -1)
    assert kernel.residency.unload_expired() == []  # "gone" still has a live process
    kernel.run_until_idle()
    assert kernel.residency.unload_expired() == ["gone"]
    kept = sys.loaded_models(ADMIN)[0]
    assert kept.name == "kept" and kept.expires_in_seconds is None
    assert idle_for(kernel, 10**9) == []
    # Unloading forgets the requested keep-alive: the next load gets the configured one.
    sys.unload_model(ADMIN, "kept")
    sys.load_model(ADMIN, "kept")
    assert sys.loaded_models(ADMIN)[0].keep_alive_seconds == kernel.residency.keep_alive_seconds


def test_keep_alive_zero_for_a_model_not_loaded_changes_nothing() -> None:
    kernel, sys, _ = make_kernel()
    sys.set_keep_alive(App("a"), "m", 0)
    sys.load_model(ADMIN, "m")
    assert idle_for(kernel, 1) == []


def test_load_and_unload_need_the_admin_capability_and_are_audited_counted() -> None:
    _, sys, engines = make_kernel()
    info = sys.load_model(ADMIN, "m", keep_alive=60)
    assert info.name == "m" and info.keep_alive_seconds == 60 and 59 < info.expires_in_seconds <= 60
    assert info.memory_bytes == 1000 and set(engines) == {"m"}
    with pytest.raises(PermissionDeniedError, match="load models"):
        sys.load_model(App("user"), "other")
    with pytest.raises(PermissionDeniedError, match="unload models"):
        sys.unload_model(App("user"), "m")
    assert sys.unload_model(ADMIN, "m") == {"model": "m", "unloaded": True, "pending": False}
    assert loaded(sys) == []
    with pytest.raises(ModelNotFoundError, match="not loaded"):
        sys.unload_model(ADMIN, "m")
    calls = sys.metrics_snapshot().counters["apps"]
    assert calls["admin"]["calls"][("models.load", "ok")] == 1
    assert calls["admin"]["calls"][("models.unload", "ok")] == 1
    assert calls["admin"]["calls"][("models.unload", "error")] == 1
    assert calls["user"]["calls"][("models.load", "denied")] == 1


def test_unloading_a_busy_model_waits_for_its_processes() -> None:
    kernel, sys, _ = make_kernel()
    sys.generate(App("a"), "m", "hello", params(3))
    assert sys.unload_model(ADMIN, "m") == {"model": "m", "unloaded": False, "pending": True}
    assert kernel.residency.unload_expired() == []
    kernel.run_until_idle()
    assert kernel.residency.unload_expired() == ["m"]


def test_a_preloaded_model_is_held_until_unloaded_and_is_not_evicted_for_room() -> None:
    kernel, sys, _ = make_kernel(budget=2500, sizes={"held": 1000, "a": 1000, "b": 1000})
    sys.preload(ADMIN, "held", keep=True)
    assert sys.loaded_models(ADMIN)[0].held and idle_for(kernel, 10**6) == []
    sys.load_model(ADMIN, "a")
    sys.load_model(ADMIN, "b")  # needs the room of one: "a" goes, the held model stays
    assert loaded(sys) == ["b", "held"]
    assert sys.unload_model(ADMIN, "held")["unloaded"]


def test_services_and_the_decider_use_the_configured_model_else_the_default() -> None:
    _, sys, _ = make_kernel()
    assert sys.model_for("summarize") == "default" and sys.decider_model() == "default"
    sys.settings = Settings.model_validate({"services": {"summarize": "big"}, "router": {"decider": "judge"}})
    assert sys.model_for("summarize") == "big"
    assert sys.model_for("summarize", "named") == "named"  # the caller's choice wins
    assert sys.model_for("translate") == "default"
    assert sys.decider_model() == "judge" and sys.decider_model("named") == "named"
