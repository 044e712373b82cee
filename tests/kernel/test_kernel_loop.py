"""The kernel's loop in its own thread: it runs work as soon as work is runnable (every event that
makes it so wakes it), and it sleeps until a policy's hold ends rather than polling for it."""

from __future__ import annotations

import time
from pathlib import Path

import llmasos
from llmasos.engine.sampling import SamplingParams
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.library.store import ModelStore
from llmasos.security.apps import App, AppRegistry
from tests.helpers.fake_engine import FakeEngine

#: Longer than any test here may take: a loop that waited for its idle timeout instead of being
#: woken would fail the test (its events time out) rather than pass slowly.
NEVER = 600.0
EVENT_TIMEOUT = 20.0


def loop_kernel(**config) -> tuple[Kernel, Syscalls]:
    """A kernel on the scripted engine with the real clock, for its loop thread."""

    def load(name: str):
        return FakeEngine(max_num_seqs=4), 1000

    residency = ResidencyManager(10_000, load, lambda name: 1000)
    kernel = Kernel(residency, KernelConfig(idle_sleep_seconds=NEVER, **config))
    return kernel, Syscalls(kernel, AppRegistry())


def finish(sys: Syscalls, app: App, pid: int) -> str:
    return "".join(e.text for e in sys.events(app, pid, timeout=EVENT_TIMEOUT))


def test_work_that_arrives_while_the_loop_sleeps_runs_at_once() -> None:
    kernel, sys = loop_kernel()
    kernel.start()
    try:
        app = App("a")
        for _ in range(3):  # each arrives at a loop asleep for NEVER seconds
            process = sys.generate(app, "m", "hello", SamplingParams(max_tokens=3, temperature=0))
            assert finish(sys, app, process.pid) == "t10 t11 t12 "
    finally:
        kernel.stop()
    counters = kernel.loop_counters
    assert counters.stalled_ticks == 0 and counters.sleeps_while_live == 0, counters


def test_the_loop_sleeps_until_the_latency_hold_ends_instead_of_polling() -> None:
    """Background work that arrives just after urgent work ended waits for the policy's hold (a
    quarter second); the loop sleeps until then, once, and then runs it."""
    kernel, sys = loop_kernel()
    kernel.start()
    try:
        ui, etl = App("ui", priority="interactive"), App("etl", priority="batch")
        urgent = sys.generate(ui, "m", "now", SamplingParams(max_tokens=2, temperature=0))
        finish(sys, ui, urgent.pid)
        background = sys.generate(etl, "m", "later", SamplingParams(max_tokens=2, temperature=0))
        assert finish(sys, etl, background.pid) == "t10 t11 "
    finally:
        kernel.stop()
    counters = kernel.loop_counters
    # One sleep to the hold's end (two if the clock read a hair before it); polling every 50 ms, as
    # the loop once did, took five or more.
    assert 1 <= counters.timed_out_while_live <= 2, counters
    assert counters.stalled_ticks == 0, counters


def test_wake_ends_a_sleep_with_live_work_held_by_an_event(monkeypatch) -> None:
    """Work that only an event lets run (h2's reader catching up, say) runs when that event calls
    `kernel.wake()`, not after the idle wait."""
    kernel, sys = loop_kernel()
    held = {"on": True}
    select = kernel._within_quotas

    def within_quotas(chosen):
        return [] if held["on"] else select(chosen)

    monkeypatch.setattr(kernel, "_within_quotas", within_quotas)
    kernel.start()
    try:
        app = App("a")
        process = sys.generate(app, "m", "x", SamplingParams(max_tokens=2, temperature=0))
        deadline = time.monotonic() + EVENT_TIMEOUT
        while kernel.loop_counters.sleeps_while_live == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kernel.loop_counters.sleeps_while_live == 1  # it found the process held, and slept
        held["on"] = False
        kernel.wake()
        assert finish(sys, app, process.pid) == "t10 t11 "
    finally:
        kernel.stop()
    assert kernel.loop_counters.timed_out_while_live == 0


def test_an_in_process_stream_never_leaves_the_loop_asleep_or_stalled(tiny_gguf: Path) -> None:
    """The in-process client (`llmasos chat` without a server) on the real tiny model, audited: no
    tick leaves chosen work undone, and the loop never sleeps while the stream's process is live."""
    ModelStore().pull(str(tiny_gguf), name="tiny", progress=False)
    with llmasos.Client(model="tiny", local=True) as client:
        client.preload("tiny")
        kernel = client._transport.system_calls()[0].kernel
        generated = 0
        for seed in range(2):
            stream = client.chat(
                [{"role": "user", "content": "Hello"}], stream=True, max_tokens=48, seed=seed
            )
            assert "".join(stream)
            generated += stream.usage["completion_tokens"]
        counters = kernel.loop_counters
    assert counters.ticks >= generated and counters.stalled_ticks == 0, counters
    assert counters.sleeps_while_live == 0, counters
