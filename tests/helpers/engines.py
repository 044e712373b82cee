"""Engines on the tiny model with a chosen KV pool, and random prompts, for engine tests."""

from __future__ import annotations

import random
from dataclasses import replace

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.model_runner import kv_bytes_per_token


def config_with(loaded, num_blocks: int, block_size: int = 4, **kwargs) -> EngineConfig:
    """An engine config whose KV pool is exactly `num_blocks` blocks of `block_size` tokens."""
    config = EngineConfig(block_size=block_size, **kwargs)
    per_token = kv_bytes_per_token(config, loaded)  # depends on the KV dtype the config resolves to
    return replace(config, kv_cache_bytes=num_blocks * block_size * per_token)


def engine_with(loaded, num_blocks: int = 64, block_size: int = 4, **kwargs) -> LLMEngine:
    """An engine whose KV pool has exactly `num_blocks` blocks of `block_size` tokens."""
    engine = LLMEngine(loaded, config_with(loaded, num_blocks, block_size, **kwargs))
    assert engine.block_manager.num_blocks == num_blocks
    return engine


def random_prompts(lengths: list[int], seed: int = 0, vocab: int = 409) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]
