"""Loading a model happens outside the kernel's lock: other models' processes keep running meanwhile,
and a model being admitted to is pinned against eviction."""

from __future__ import annotations

import threading

from llmasos.engine.sampling import SamplingParams
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App, AppRegistry
from tests.helpers.fake_engine import FakeEngine


def test_other_models_run_while_one_loads() -> None:
    release_slow = threading.Event()
    slow_started = threading.Event()

    def load(name: str):
        if name == "slow":
            slow_started.set()
            assert release_slow.wait(30), "the test never released the slow load"
        return FakeEngine(max_num_seqs=4), 1000

    kernel = Kernel(ResidencyManager(10_000, load, lambda name: 1000), KernelConfig())
    sys = Syscalls(kernel, AppRegistry())
    app = App("a")
    sys.generate(app, "fast", "warm", SamplingParams(max_tokens=1))  # load "fast" first
    kernel.run_until_idle()

    loader = threading.Thread(target=sys.generate, args=(app, "slow", "x", SamplingParams(max_tokens=1)))
    loader.start()
    assert slow_started.wait(10)
    # "slow" is loading in another thread; "fast" work is admitted and runs to its end meanwhile.
    process = sys.generate(app, "fast", "hello", SamplingParams(max_tokens=3))
    for _ in range(50):
        if process.is_terminal:
            break
        kernel.tick()
    assert process.state.value == "finished"
    release_slow.set()
    loader.join(10)
    assert set(kernel.residency.models) == {"fast", "slow"}
    assert all(m.pins == 0 for m in kernel.residency.models.values())


def test_a_pinned_model_is_not_evicted_by_another_load() -> None:
    residency = ResidencyManager(1500, lambda name: (FakeEngine(), 1000), lambda name: 1000)
    residency.acquire("a")  # pinned, no process yet
    try:
        residency.acquire("b")
        raise AssertionError("b must not fit while a is pinned")
    except Exception as err:
        assert "Retry when they are idle" in str(err)
    residency.release("a")
    residency.acquire("b")  # now a is idle and unpinned: evicted for b
    assert set(residency.models) == {"b"}
