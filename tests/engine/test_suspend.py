"""Suspend and resume: a generation set aside in any mode continues exactly where it stopped."""

from __future__ import annotations

import pytest

from llmasos.engine.sampling import SamplingParams
from llmasos.engine.sequence import SuspendMode
from llmasos.errors import InvalidRequestError, RequestNotFoundError
from tests.helpers.engines import engine_with, random_prompts

MODES = [SuspendMode.SWAP, SuspendMode.KEEP, SuspendMode.RECOMPUTE]
GREEDY = SamplingParams(max_tokens=20, temperature=0, repetition_penalty=1.3)
SAMPLED = SamplingParams(max_tokens=20, temperature=1.0, seed=11)


def uninterrupted(loaded, prompt, params) -> list[int]:
    engine = engine_with(loaded, num_blocks=64)
    return engine.generate([prompt], params)[0][1]


def drain(engine, tokens: dict[str, list[int]]) -> None:
    while engine.has_unfinished_requests:
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.token_ids)


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "seeded"])
def test_suspended_equals_uninterrupted_while_others_use_the_pool(tiny_loaded, mode, params) -> None:
    prompt = random_prompts([14], seed=1)[0]
    engine = engine_with(tiny_loaded, num_blocks=24)
    engine.add("main", prompt, params)
    tokens: dict[str, list[int]] = {}
    for _ in range(6):
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.token_ids)
    report = engine.suspend("main", mode)
    assert report.mode is mode and report.num_tokens == engine.requests["main"].seq.num_tokens - 1
    # Other work overwrites whatever blocks were freed.
    for i, other in enumerate(random_prompts([30, 25], seed=2)):
        engine.add(f"other{i}", other, SamplingParams(max_tokens=15, temperature=0))
    drain(engine, tokens)
    assert "main" in engine.requests and engine.requests["main"].seq.num_output_tokens == 6
    engine.resume("main")
    drain(engine, tokens)
    assert tokens["main"] == uninterrupted(tiny_loaded, prompt, params)
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_each_mode_frees_or_keeps_blocks_as_it_says(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=32)
    for mode in MODES:
        engine.add(mode.value, random_prompts([10], seed=3)[0], GREEDY)
    engine.step()
    engine.step()
    for mode in MODES:
        held = len(engine.requests[mode.value].seq.block_table)
        free_before = engine.block_manager.num_free_blocks
        report = engine.suspend(mode.value, mode)
        freed = engine.block_manager.num_free_blocks - free_before
        assert freed == (0 if mode is SuspendMode.KEEP else held)
        per_token = engine.loaded.config.kv_bytes_per_token(engine.runner.kv_cache.element_size())
        swapped_blocks = engine.block_manager.blocks_for(report.num_tokens)
        assert report.bytes_moved == (swapped_blocks * 4 * per_token if mode is SuspendMode.SWAP else 0)
    assert engine.stats().num_suspended == 3
    assert engine.step().is_empty and not engine.has_unfinished_requests  # nothing to run, no stall


def test_swap_resume_waits_for_blocks_then_continues_exactly(tiny_loaded) -> None:
    prompt = random_prompts([12], seed=4)[0]
    engine = engine_with(tiny_loaded, num_blocks=10)
    engine.add("main", prompt, GREEDY)
    tokens: dict[str, list[int]] = {}
    for _ in range(3):
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.token_ids)
    engine.suspend("main", "swap")
    engine.add("hog", random_prompts([30], seed=5)[0], SamplingParams(max_tokens=8, temperature=0))
    engine.step()  # the hog now holds most of the pool
    report = engine.resume("main")
    assert report.pending
    drain(engine, tokens)
    assert tokens["main"] == uninterrupted(tiny_loaded, prompt, GREEDY)


@pytest.mark.parametrize("mode", [SuspendMode.SWAP, SuspendMode.RECOMPUTE], ids=str)
def test_kept_kv_moves_out_of_the_pool_without_a_resume_and_continues_exactly(tiny_loaded, mode) -> None:
    prompt = random_prompts([14], seed=12)[0]
    engine = engine_with(tiny_loaded, num_blocks=24)
    engine.add("main", prompt, GREEDY)
    tokens: dict[str, list[int]] = {}
    for _ in range(6):
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.token_ids)
    engine.suspend("main", "keep")
    held = len(engine.requests["main"].seq.block_table)
    free_before = engine.block_manager.num_free_blocks
    report = engine.suspend("main", mode)  # still suspended: its KV leaves the pool
    assert report.mode is mode and report.num_blocks == held
    assert engine.block_manager.num_free_blocks == free_before + held
    assert engine.stats().num_suspended == 1 and engine.stats().num_running == 0
    for i, other in enumerate(random_prompts([30, 25], seed=13)):  # others overwrite the freed blocks
        engine.add(f"other{i}", other, SamplingParams(max_tokens=15, temperature=0))
    drain(engine, tokens)
    engine.resume("main")
    drain(engine, tokens)
    assert tokens["main"] == uninterrupted(tiny_loaded, prompt, GREEDY)
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_costs_name_every_mode(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=32)
    engine.add("a", random_prompts([17], seed=6)[0], GREEDY)
    engine.step()
    costs = engine.suspend_costs("a")
    per_token = engine.loaded.config.kv_bytes_per_token(engine.runner.kv_cache.element_size())
    assert set(costs) == set(MODES)
    assert costs[SuspendMode.SWAP].host_bytes == 17 * per_token
    assert costs[SuspendMode.KEEP].kv_bytes_held == 5 * 4 * per_token
    assert costs[SuspendMode.KEEP].resume_seconds == 0
    assert costs[SuspendMode.RECOMPUTE].resume_seconds > 0


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_abort_of_a_suspended_request_returns_everything(tiny_loaded, mode) -> None:
    engine = engine_with(tiny_loaded, num_blocks=32)
    engine.add("a", random_prompts([9], seed=7)[0], GREEDY)
    engine.step()
    engine.suspend("a", mode)
    engine.abort("a")
    assert engine.block_manager.num_free_blocks == 32
    assert engine.stats().num_suspended == 0 and not engine.requests


def test_bad_suspend_and_resume_calls_are_refused_clearly(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=32)
    with pytest.raises(RequestNotFoundError):
        engine.suspend("nope")
    engine.add("a", random_prompts([5], seed=8)[0], GREEDY)
    with pytest.raises(InvalidRequestError, match="not suspended"):
        engine.resume("a")
    with pytest.raises(InvalidRequestError, match="swap, keep, recompute"):
        engine.suspend("a", "hibernate")
    engine.suspend("a", "swap")
    with pytest.raises(InvalidRequestError, match=r"already suspended \(KV swap\)"):
        engine.suspend("a", "recompute")
