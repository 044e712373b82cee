"""Engines on the tiny model with a chosen KV pool, and random prompts, for engine tests."""

from __future__ import annotations

import random

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine


def engine_with(loaded, num_blocks: int = 64, block_size: int = 4, **kwargs) -> LLMEngine:
    """An engine whose KV pool has exactly `num_blocks` blocks of `block_size` tokens."""
    bytes_per_block = block_size * loaded.config.kv_bytes_per_token(4)
    config = EngineConfig(block_size=block_size, kv_cache_bytes=num_blocks * bytes_per_block, **kwargs)
    engine = LLMEngine(loaded, config)
    assert engine.block_manager.num_blocks == num_blocks
    return engine


def random_prompts(lengths: list[int], seed: int = 0, vocab: int = 409) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]
