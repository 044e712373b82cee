"""The kernel on real engines (the tiny model, and SmolLM2 in every suspend mode): context switches
never change what is generated."""

from __future__ import annotations

import pytest

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.engine.sequence import SuspendMode
from llmasos.kernel import kernel as kernel_module
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.process import ProcessState
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.model.loader import load_model
from llmasos.security.apps import App, AppRegistry
from tests.helpers.engines import config_with, random_prompts

GREEDY = SamplingParams(max_tokens=24, temperature=0, repetition_penalty=1.3)


def kernel_on(loaded, slots: int) -> tuple[Kernel, Syscalls, LLMEngine]:
    config = config_with(loaded, num_blocks=48, max_num_seqs=slots)
    engine = LLMEngine(loaded, config)
    residency = ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1)
    kernel = Kernel(residency, KernelConfig(engine=config))
    return kernel, Syscalls(kernel, AppRegistry()), engine


def test_preempted_generations_equal_uninterrupted_ones(tiny_loaded) -> None:
    prompts = random_prompts([9, 14, 6, 11], seed=3)
    solo = LLMEngine(tiny_loaded, EngineConfig(block_size=4, kv_cache_bytes=1 << 20))
    expected = [solo.generate([p], GREEDY)[0][1] for p in prompts]
    kernel, sys, engine = kernel_on(tiny_loaded, slots=2)
    batch, ui = App("etl", priority="batch"), App("ui", priority="interactive")
    pids = [sys.generate(batch, "tiny", p, GREEDY).pid for p in prompts[:2]]
    for _ in range(4):
        kernel.tick()
    pids += [sys.generate(ui, "tiny", p, GREEDY).pid for p in prompts[2:]]
    kernel.run_until_idle()
    assert sum(kernel.table[p].num_preemptions for p in pids) >= 2
    for pid, want in zip(pids, expected, strict=True):
        app = batch if kernel.table[pid].app == "etl" else ui
        got = [t for e in sys.events(app, pid) for t in e.token_ids]
        assert got == want
        assert kernel.table[pid].state is ProcessState.FINISHED
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks and not engine.requests


def test_cancel_through_the_kernel_returns_every_block(tiny_loaded) -> None:
    kernel, sys, engine = kernel_on(tiny_loaded, slots=4)
    app = App("a")
    pids = [sys.generate(app, "tiny", p, GREEDY).pid for p in random_prompts([20, 20, 20], seed=4)]
    for _ in range(3):
        kernel.tick()
    for pid in pids:
        sys.cancel(app, pid)
    kernel.run_until_idle()
    assert engine.stats().num_free_blocks == engine.stats().num_blocks and not engine.requests


# -- the real default model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_loaded(default_gguf_path):  # -> LoadedModel
    return load_model(default_gguf_path)


@pytest.mark.parametrize("mode", list(SuspendMode))
def test_real_model_generations_survive_preemption_unchanged_in_every_suspend_mode(
    default_loaded, mode: SuspendMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batch chats are preempted by two interactive ones on SmolLM2 (the kernel's context switch,
    with its choice of where the KV waits forced to `mode`); all four say exactly what they say alone."""
    monkeypatch.setattr(kernel_module, "choose_suspend_mode", lambda *args: mode)
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    questions = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Say hello."]
    solo = LLMEngine(default_loaded, EngineConfig(kv_cache_bytes=64 << 20))
    prompts = [solo.tokenizer.encode_chat([{"role": "user", "content": q}]) for q in questions]
    expected = [solo.generate([p], greedy)[0][1] for p in prompts]

    config = EngineConfig(kv_cache_bytes=64 << 20, max_num_seqs=2)
    engine = LLMEngine(default_loaded, config)
    modes = []
    suspend = engine.suspend
    monkeypatch.setattr(engine, "suspend", lambda rid, m: modes.append(m) or suspend(rid, m))
    residency = ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1)
    kernel = Kernel(residency, KernelConfig(engine=config))
    sys = Syscalls(kernel, AppRegistry())
    batch, ui = App("etl", priority="batch"), App("ui", priority="interactive")
    pids = [sys.generate(batch, "default", p, greedy).pid for p in prompts[:2]]
    for _ in range(4):
        kernel.tick()
    pids += [sys.generate(ui, "default", p, greedy).pid for p in prompts[2:]]
    kernel.run_until_idle()
    assert all(kernel.table[p].num_preemptions == 1 for p in pids[:2]) and modes == [mode, mode]
    for pid, want in zip(pids, expected, strict=True):
        app = batch if kernel.table[pid].app == "etl" else ui
        assert [t for e in sys.events(app, pid) for t in e.token_ids] == want
        assert kernel.table[pid].state is ProcessState.FINISHED
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks and not engine.requests
