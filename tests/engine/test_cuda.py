"""The engine on CUDA, through the same code as on CPU (skipped where no GPU is present).

The tiny random model is loaded onto the GPU; on CPU the same file is the reference. Float32 on the
GPU computes the same products in another order, so greedy tokens are compared over short spans on
prompts whose logits are far from ties; what must hold exactly on the GPU itself is what the engine
promises anywhere: a suspended sequence (its KV copied to pinned host memory and back) continues
exactly, and every block comes back.
"""

from __future__ import annotations

import pytest
import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.model.loader import load_model
from tests.helpers.engines import random_prompts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

GREEDY = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
PROMPTS = random_prompts([5, 9, 13, 21], seed=11)


def engine_on(loaded, **config) -> LLMEngine:
    return LLMEngine(loaded, EngineConfig(block_size=4, kv_cache_bytes=4 << 20, **config))


@pytest.fixture(scope="module")
def cuda_loaded(tiny_gguf):
    return load_model(tiny_gguf, device="cuda")


def test_the_engine_runs_on_the_gpu_and_matches_the_cpu(cuda_loaded, tiny_loaded) -> None:
    # Dense float32 on both (the CPU's default would be int4 weights).
    gpu = engine_on(cuda_loaded, weight_format="float32")
    assert gpu.runner.kv_cache.is_cuda and next(gpu.runner.model.parameters()).is_cuda
    cpu = engine_on(tiny_loaded, weight_format="float32")
    got = [ids for _, ids in gpu.generate(PROMPTS, GREEDY)]
    want = [ids for _, ids in cpu.generate(PROMPTS, GREEDY)]
    # Leading tokens agree; after the first near-tie the two devices may take different branches.
    agree = [_leading_agreement(g, w) for g, w in zip(got, want, strict=True)]
    assert min(agree) >= 4 and sum(agree) >= 0.75 * sum(len(w) for w in want), agree


def _leading_agreement(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


@pytest.mark.parametrize("mode", ["swap", "keep", "recompute"])
def test_a_suspended_sequence_continues_exactly_on_the_gpu(cuda_loaded, mode: str) -> None:
    solo = engine_on(cuda_loaded)
    expected = solo.generate([PROMPTS[3]], GREEDY)[0][1]
    engine = engine_on(cuda_loaded)
    engine.add("r", PROMPTS[3], GREEDY)
    tokens: list[int] = []
    for step in range(40):
        for output in engine.step():
            tokens += output.token_ids
        if step == 6:
            report = engine.suspend("r", mode)
            if mode == "swap":
                assert report.bytes_moved > 0
            engine.resume("r")
        if "r" not in engine.requests:
            break
    assert tokens == expected
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks and not engine.requests


def test_bfloat16_on_the_gpu_serves_a_batch_and_returns_every_block(tiny_gguf) -> None:
    engine = LLMEngine.from_path(str(tiny_gguf), EngineConfig(block_size=4, kv_cache_bytes=4 << 20))
    assert engine.runner.kv_cache.dtype == torch.bfloat16 and engine.runner.kv_cache.is_cuda
    outputs = engine.generate(PROMPTS, GREEDY)
    assert all(len(ids) == GREEDY.max_tokens for _, ids in outputs)
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks and not engine.requests
