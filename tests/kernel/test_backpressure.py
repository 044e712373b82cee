"""Backpressure on the tiny model: a process whose reader does not take its output stops being
computed at the bound, holding its KV; the others go on unchanged; it resumes and completes
identically once read; a reader that takes nothing for the timeout ends it (audited) and frees its KV."""

from __future__ import annotations

import queue

import pytest

from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.errors import InvalidRequestError, ReaderTimeoutError
from llmasos.kernel.backpressure import OutputLimits
from llmasos.kernel.kernel import Event, Kernel, KernelConfig
from llmasos.kernel.process import ProcessState
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog
from tests.helpers.engines import config_with, random_prompts

BOUND = 8
LIMITS = OutputLimits(buffer_tokens=BOUND, reader_timeout_seconds=30.0)
LONG = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def kernel_on(loaded, clock: Clock, audit: AuditLog | None = None) -> tuple[Kernel, Syscalls, LLMEngine]:
    config = config_with(loaded, num_blocks=64, max_num_seqs=4)
    engine = LLMEngine(loaded, config)
    residency = ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1)
    kernel = Kernel(residency, KernelConfig(engine=config, output=LIMITS), clock=clock)
    return kernel, Syscalls(kernel, AppRegistry(), audit=audit), engine


def read_waiting(sys: Syscalls, app: App, pid: int) -> list[Event]:
    """The events in the process's outbox now, taken (as a reader that keeps up takes them)."""
    taken: list[Event] = []
    try:
        for event in sys.events(app, pid, timeout=0):
            taken.append(event)
    except queue.Empty:
        pass
    return taken


def tokens(events: list[Event]) -> list[int]:
    return [t for e in events for t in e.token_ids]


def test_an_unread_process_stops_at_the_bound_holding_its_kv_and_resumes_identically(tiny_loaded) -> None:
    prompts = random_prompts([9, 12], seed=7)
    solo = LLMEngine(tiny_loaded, config_with(tiny_loaded, num_blocks=64))
    expected = [solo.generate([p], LONG)[0][1] for p in prompts]
    clock = Clock()
    kernel, sys, engine = kernel_on(tiny_loaded, clock)
    calm, idle = App("calm"), App("idle")
    reader = sys.generate(calm, "tiny", prompts[0], LONG)
    stalled = sys.generate(idle, "tiny", prompts[1], LONG)

    calm_events: list[Event] = []
    while not reader.is_terminal:  # the calm app reads as it goes; the idle one reads nothing
        kernel.tick()
        clock.now += 0.01
        calm_events += read_waiting(sys, calm, reader.pid)
    calm_events += read_waiting(sys, calm, reader.pid)
    assert tokens(calm_events) == expected[0] and reader.state is ProcessState.FINISHED

    assert stalled.state is ProcessState.BLOCKED and "waiting for its reader" in stalled.reason
    assert stalled.tokens_out == BOUND  # computed up to the bound, not to its 40
    computed = stalled.tokens_computed
    for _ in range(20):  # nothing more is computed for it while its reader takes nothing
        kernel.tick()
        clock.now += 0.01
    assert (stalled.tokens_out, stalled.tokens_computed) == (BOUND, computed)
    assert engine.stats().num_free_blocks < engine.stats().num_blocks  # it holds its KV meanwhile
    assert sys.describe(stalled)["state"] == "blocked"  # what `ps` shows

    stalled_events = read_waiting(sys, idle, stalled.pid)  # its reader comes back
    while not stalled.is_terminal:
        kernel.tick()
        clock.now += 0.01
        stalled_events += read_waiting(sys, idle, stalled.pid)
    stalled_events += read_waiting(sys, idle, stalled.pid)
    assert tokens(stalled_events) == expected[1] and stalled.state is ProcessState.FINISHED
    assert stalled_events[-1].finish_reason == "length"
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks and not engine.requests


def test_a_reader_that_takes_nothing_for_the_timeout_ends_its_process_audited(
    tiny_loaded, llmasos_home
) -> None:
    clock = Clock()
    log = AuditLog()
    kernel, sys, engine = kernel_on(tiny_loaded, clock, audit=log)
    idle = App("idle")
    process = sys.generate(idle, "tiny", random_prompts([10], seed=8)[0], LONG)
    while process.state is not ProcessState.BLOCKED:
        kernel.tick()
    clock.now += LIMITS.reader_timeout_seconds - 1
    kernel.tick()
    assert process.state is ProcessState.BLOCKED
    taken = sys.events(idle, process.pid, timeout=0)
    next(taken)  # the reader takes one token (not enough to go on): its timeout starts again
    clock.now += 2
    kernel.tick()
    assert process.state is ProcessState.BLOCKED

    clock.now += LIMITS.reader_timeout_seconds
    kernel.run_until_idle()
    assert process.state is ProcessState.CANCELLED and "its reader took none of its output" in process.reason
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks and not engine.requests  # every KV block back
    final = list(sys.events(idle, process.pid, timeout=10))[-1]
    assert final.finished and isinstance(final.error, ReaderTimeoutError)
    end = next(r for r in log.query() if r["pid"] == process.pid)  # newest first: its end row
    assert end["outcome"] == "cancelled" and "its reader took none" in end["reason"]


def test_without_limits_nothing_blocks_and_bad_limits_are_refused(tiny_loaded) -> None:
    config = config_with(tiny_loaded, num_blocks=64, max_num_seqs=4)
    engine = LLMEngine(tiny_loaded, config)
    residency = ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1)
    kernel = Kernel(residency, KernelConfig(engine=config))  # a kernel driven by hand: unbounded
    sys = Syscalls(kernel, AppRegistry())
    process = sys.generate(App("a"), "tiny", random_prompts([6], seed=9)[0], LONG)
    kernel.run_until_idle()
    assert process.tokens_out == 40 and process.state is ProcessState.FINISHED
    for bad in ({"buffer_tokens": 1}, {"buffer_tokens": 2.5}, {"reader_timeout_seconds": 0}):
        with pytest.raises(InvalidRequestError, match=r"output buffer|reader timeout"):
            OutputLimits(**bad)


def test_a_blocked_process_kv_leaves_the_pool_when_it_runs_short(tiny_loaded) -> None:
    prompts = random_prompts([9, 60], seed=10)
    solo = LLMEngine(tiny_loaded, config_with(tiny_loaded, num_blocks=64))
    expected = solo.generate([prompts[0]], LONG)[0][1]
    clock = Clock()
    config = config_with(tiny_loaded, num_blocks=24, max_num_seqs=4)
    engine = LLMEngine(tiny_loaded, config)
    residency = ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1)
    kernel = Kernel(residency, KernelConfig(engine=config, output=LIMITS), clock=clock)
    sys = Syscalls(kernel, AppRegistry())
    calls = count_suspends_and_resumes(engine)
    idle, big = App("idle"), App("big")
    stalled = sys.generate(idle, "tiny", prompts[0], LONG)
    while stalled.state is not ProcessState.BLOCKED:
        kernel.tick()
    assert stalled.reason.endswith("KV keep")  # the pool had room: left in it, resumable at no cost
    held = engine.stats().num_blocks - engine.stats().num_free_blocks

    other = sys.generate(big, "tiny", prompts[1], SamplingParams(max_tokens=4, temperature=0))
    kernel.tick()  # the big prompt takes 15 of the 24 blocks: under half the pool is free
    kernel.tick()  # so the blocked one's KV is moved out of it
    assert stalled.state is ProcessState.BLOCKED and "the pool ran short" in stalled.reason
    assert "KV keep" not in stalled.reason and held == 4  # 16 tokens computed: 9 prompt, 7 sampled
    assert engine.stats().num_blocks - engine.stats().num_free_blocks <= 16  # the big one's alone
    # Moved out while still suspended: set aside twice (kept, then out), never resumed in between.
    assert calls[str(stalled.pid)] == ["suspend", "suspend"]
    while not other.is_terminal:
        kernel.tick()

    taken = read_waiting(sys, idle, stalled.pid)
    while not stalled.is_terminal:  # read, it resumes from host memory (or recomputes) unchanged
        kernel.tick()
        taken += read_waiting(sys, idle, stalled.pid)
    taken += read_waiting(sys, idle, stalled.pid)
    assert tokens(taken) == expected
    assert engine.stats().num_free_blocks == engine.stats().num_blocks and not engine.requests
    assert calls[str(stalled.pid)] == ["suspend", "suspend", "resume"]  # resumed once: when read


def count_suspends_and_resumes(engine: LLMEngine) -> dict[str, list[str]]:
    """Each request's engine calls that set it aside or bring it back, in order, as they are made."""
    calls: dict[str, list[str]] = {}
    for name in ("suspend", "resume"):
        method = getattr(engine, name)

        def counted(request_id: str, *args, _method=method, _name=name):
            calls.setdefault(request_id, []).append(_name)
            return _method(request_id, *args)

        setattr(engine, name, counted)
    return calls


def test_a_blocked_process_is_not_counted_in_the_wait_of_a_process_queued_behind_it(tiny_loaded) -> None:
    clock = Clock()
    kernel, sys, _ = kernel_on(tiny_loaded, clock)
    stalled = sys.generate(App("idle"), "tiny", random_prompts([9], seed=11)[0], LONG)
    while stalled.state is not ProcessState.BLOCKED:
        kernel.tick()
    later = sys.generate(App("later"), "tiny", random_prompts([9], seed=12)[0], LONG)
    assert later.state is ProcessState.QUEUED and kernel.remaining_tokens(stalled) == 40 - BOUND
    assert kernel.rate("tiny").seconds_for(kernel.remaining_tokens(stalled)) > 0  # what it would add
    assert kernel.estimated_wait(later) == 0.0  # nothing runnable is ahead of it
    assert sys.describe(later)["estimated_wait_seconds"] == 0.0  # what `ps` shows


def test_the_settings_set_a_booted_kernels_limits_and_bad_ones_say_which(llmasos_home, monkeypatch) -> None:
    from llmasos.errors import ConfigurationError
    from llmasos.kernel.boot import boot

    monkeypatch.setenv("LLMASOS_KERNEL_OUTPUT_BUFFER_TOKENS", "64")
    monkeypatch.setenv("LLMASOS_KERNEL_READER_TIMEOUT", "30s")
    booted = boot(audit=False)
    assert booted.kernel.config.output == OutputLimits(64, 30.0)
    booted.close()
    monkeypatch.setenv("LLMASOS_KERNEL_OUTPUT_BUFFER_TOKENS", "1")
    with pytest.raises(ConfigurationError, match=r"kernel\.output_buffer_tokens"):
        boot(audit=False)
