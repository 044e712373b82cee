"""The kernel over a scripted engine with a fake clock: who runs, who waits, what is refused."""

from __future__ import annotations

import pytest

from llmasos.engine.sampling import SamplingParams
from llmasos.errors import (
    ModelUnavailableError,
    PermissionDeniedError,
    ProcessNotFoundError,
    ProcessStateError,
    QuotaExceededError,
)
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.process import ProcessState
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App, AppRegistry
from tests.helpers.fake_engine import FakeEngine


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001  # every reading is a little later, as real time is
        return self.now


def make_kernel(slots: int = 4, budget: int = 10_000, sizes: dict | None = None, **config):
    clock = FakeClock()
    engines: dict[str, FakeEngine] = {}

    def load(name: str):
        engines[name] = FakeEngine(max_num_seqs=slots)
        return engines[name], (sizes or {}).get(name, 1000)

    residency = ResidencyManager(budget, load, lambda name: (sizes or {}).get(name, 1000), clock=clock)
    kernel = Kernel(residency, KernelConfig(**config), clock=clock)
    return kernel, Syscalls(kernel, AppRegistry()), engines


def params(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0)


def test_a_process_runs_to_completion_and_streams_its_events() -> None:
    kernel, sys, _ = make_kernel()
    app = App("a")
    process = sys.generate(app, "m", "hello", params(3))
    kernel.run_until_idle()
    events = list(sys.events(app, process.pid))
    assert "".join(e.text for e in events) == "t10 t11 t12 "
    assert events[-1].finished and events[-1].finish_reason == "length"
    info = sys.status(app, process.pid)
    assert info["state"] == "finished" and info["tokens_in"] == 5 and info["tokens_out"] == 3


def test_fair_share_between_apps_through_the_kernel() -> None:
    """Four equal apps, one submitting ten times more work: tokens computed per app stay equal."""
    kernel, sys, _ = make_kernel(slots=8)
    apps = [App(name) for name in ("flood", "a", "b", "c")]
    for app in apps:
        count = 40 if app.name == "flood" else 4
        for _ in range(count):
            sys.generate(app, "m", "x" * 8, params(400))
    for _ in range(600):
        kernel.tick()
    counters = kernel.counters.snapshot()["apps"]
    tokens = [counters[a.name]["tokens_computed"] for a in apps]
    shares = [t / sum(tokens) for t in tokens]
    assert all(abs(s - 0.25) <= 0.25 * 0.05 for s in shares), shares


def test_interactive_work_preempts_batch_and_batch_resumes_exactly_where_it_stopped() -> None:
    kernel, sys, _engines = make_kernel(slots=2)
    batch, interactive = App("etl", priority="batch"), App("ui", priority="interactive")
    batch_pids = [sys.generate(batch, "m", "b", params(30)).pid for _ in range(2)]
    for _ in range(5):
        kernel.tick()
    urgent = sys.generate(interactive, "m", "hi", params(5))
    kernel.tick()
    assert kernel.table[urgent.pid].state is ProcessState.RUNNING
    # The default latency guard gives background work no slot while urgent work runs.
    suspended = [p for p in batch_pids if kernel.table[p].state is ProcessState.SUSPENDED]
    assert suspended == batch_pids
    assert all(f"preempted by pid {urgent.pid}" in kernel.table[p].reason for p in suspended)
    kernel.run_until_idle()
    for pid in batch_pids:
        text = "".join(e.text for e in sys.events(batch, pid))
        assert text == "".join(f"t{10 + i} " for i in range(30))  # no token lost or repeated
        assert kernel.table[pid].num_preemptions == 1


def test_batch_work_finishes_under_a_flood_of_interactive_work() -> None:
    kernel, sys, _ = make_kernel(slots=1, policy_options={"aging_seconds": 0.05})
    interactive = App("ui", priority="interactive")
    slow = sys.generate(App("etl", priority="batch"), "m", "b", params(3))
    for i in range(400):
        if i % 2 == 0:
            sys.generate(interactive, "m", "q", params(2))
        kernel.tick()
        if kernel.table[slow.pid].is_terminal:
            break
    assert kernel.table[slow.pid].state is ProcessState.FINISHED


def test_cancel_frees_the_engine_and_a_second_cancel_is_refused() -> None:
    kernel, sys, engines = make_kernel()
    app = App("a")
    process = sys.generate(app, "m", "hello", params(50))
    kernel.tick()
    assert "1" in engines["m"].requests
    sys.cancel(app, process.pid)
    kernel.tick()
    assert not engines["m"].requests
    assert list(sys.events(app, process.pid))[-1].finish_reason == "cancelled"
    with pytest.raises(ProcessStateError, match="already ended"):
        sys.cancel(app, process.pid)
    with pytest.raises(ProcessNotFoundError):
        sys.cancel(app, 999)
    with pytest.raises(ProcessNotFoundError):  # another app cannot see it
        sys.status(App("other"), process.pid)


def test_capabilities_and_priority_are_enforced() -> None:
    kernel, sys, _ = make_kernel()
    limited = App("limited", capabilities=("model:other",))
    with pytest.raises(PermissionDeniedError, match="may not use model 'm'"):
        sys.generate(limited, "m", "x", params(1))
    with pytest.raises(PermissionDeniedError, match="lower class"):
        sys.generate(App("n"), "m", "x", params(1), priority="realtime")
    lowered = sys.generate(App("n"), "m", "x", params(1), priority="batch")
    assert lowered.priority.label == "batch"
    assert not [p for p in kernel.table.values() if p.app == "limited"]


def test_full_queue_and_token_quota_refuse_with_a_retry_after() -> None:
    kernel, sys, _ = make_kernel()
    app = App("small", max_queued=2)
    sys.generate(app, "m", "x", params(5))
    sys.generate(app, "m", "x", params(5))
    with pytest.raises(QuotaExceededError) as full:
        sys.generate(app, "m", "x", params(5))
    assert full.value.retry_after >= 1 and "queued" in str(full.value)
    metered = App("metered", tokens_per_minute=50)
    sys.generate(metered, "m", "x" * 10, params(30))
    kernel.run_until_idle()
    with pytest.raises(QuotaExceededError, match="tokens per minute") as quota:
        sys.generate(metered, "m", "x" * 10, params(30))
    assert 0 < quota.value.retry_after <= 60
    assert not any(not p.is_terminal for p in kernel.table.values())


def test_a_model_that_cannot_fit_is_refused_naming_budget_and_size() -> None:
    kernel, sys, _ = make_kernel(budget=1500, sizes={"big": 4000, "m": 1000, "n": 1000})
    with pytest.raises(ModelUnavailableError, match="budget"):
        sys.generate(App("a"), "big", "x", params(1))
    sys.generate(App("a"), "m", "x", params(1))
    kernel.run_until_idle()
    sys.generate(App("a"), "n", "x", params(1))  # m is idle: it is evicted to make room
    assert list(kernel.residency.models) == ["n"]


def test_ps_shows_every_field_and_an_estimated_wait() -> None:
    kernel, sys, _ = make_kernel(slots=1)
    app = App("a")
    sys.generate(app, "m", "x", params(20))
    queued = sys.generate(app, "m", "y", params(20))
    kernel.tick()
    rows = sys.ps(app)
    assert [r["state"] for r in rows] == ["running", "queued"]
    assert set(rows[1]) >= {
        "pid",
        "app",
        "model",
        "state",
        "priority",
        "tokens_in",
        "tokens_out",
        "waited_seconds",
        "running_seconds",
        "reason",
        "estimated_wait_seconds",
    }
    assert rows[1]["estimated_wait_seconds"] > 0 and rows[1]["pid"] == queued.pid


def test_an_app_never_holds_more_processes_than_its_concurrency_quota() -> None:
    kernel, sys, _ = make_kernel(slots=4)
    app = App("narrow", max_concurrent=1)
    pids = [sys.generate(app, "m", "x", params(3)).pid for _ in range(3)]
    other = sys.generate(App("wide"), "m", "y", params(3))
    most_running = 0
    while any(not kernel.table[p].is_terminal for p in pids):
        kernel.tick()
        running = [p for p in pids if kernel.table[p].state is ProcessState.RUNNING]
        most_running = max(most_running, len(running))
    assert most_running == 1
    assert kernel.table[other.pid].is_terminal  # the other app was not held back by the quota


def test_the_loops_sleep_ends_when_the_latency_hold_does_and_nothing_else_is_timed() -> None:
    """The latency guard's hold ends with time, not with an event that wakes the kernel's loop: the
    loop sleeps until it ends (test_kernel_loop.py runs the loop itself)."""
    kernel, sys, _ = make_kernel()
    assert kernel._idle_wait() == kernel.config.idle_sleep_seconds  # nothing live
    urgent = sys.generate(App("ui", priority="interactive"), "m", "x", params(1))
    kernel.run_until_idle()
    assert kernel.table[urgent.pid].is_terminal
    background = sys.generate(App("etl", priority="batch"), "m", "y", params(1))
    kernel.tick()  # the hold keeps the batch process waiting
    assert kernel.table[background.pid].state is ProcessState.QUEUED
    assert 0 < kernel._idle_wait() <= 0.25 < kernel.config.idle_sleep_seconds
    kernel.clock.now += 0.25  # past the hold: it runs, and nothing is due any more
    kernel.run_until_idle()
    assert kernel.table[background.pid].is_terminal and kernel.changes_at() is None
