"""The KV pool's size follows the model and the batch, and its memory becomes resident as KV is written."""

from __future__ import annotations

import psutil
import torch

from llmasos.config import EngineConfig
from llmasos.engine.model_runner import allocate_kv_pool, kv_pool_blocks

MB = 2**20


def test_the_pool_takes_memory_as_blocks_are_written_not_up_front() -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    pool = allocate_kv_pool((4, 2, 16384, 2, 256), torch.bfloat16, torch.device("cpu"))  # 128 MiB
    assert pool.shape == (4, 2, 16384, 2, 256) and pool.dtype == torch.bfloat16
    assert process.memory_info().rss - before < 16 * MB
    assert not pool[:, :, :1024].any()  # zeros where nothing was written
    pool[:, :, 8192:].fill_(1.0)  # half of the slots
    grown = process.memory_info().rss - before
    assert 48 * MB < grown < 100 * MB  # 64 MiB written
    assert pool.sum().item() == pool[:, :, 8192:].numel()


def test_the_pool_is_never_larger_than_a_full_batch_at_full_context() -> None:
    config = EngineConfig(kv_cache_bytes=512 * MB, max_num_seqs=4, block_size=16)
    assert kv_pool_blocks(config, context_length=256, bytes_per_block=1024) == 4 * 16
    assert kv_pool_blocks(config, context_length=10**6, bytes_per_block=MB) == 512
    assert kv_pool_blocks(EngineConfig(kv_cache_bytes=1), 256, MB) == 1
