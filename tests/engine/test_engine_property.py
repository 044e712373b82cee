"""10,000 random add / step / abort / suspend / resume operations: no block or request is ever lost.

The forward pass is replaced by a scripted one (random next tokens), so the run exercises the
engine's bookkeeping -- scheduler, block manager, prefix cache, swap copies -- at full speed.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llmasos.engine.sampling import SamplerOutput, SamplingParams
from llmasos.engine.sequence import SequenceStatus, SuspendMode
from tests.helpers.engines import engine_with


def check_invariants(engine) -> None:
    bm = engine.block_manager
    holders = Counter(b for r in engine.requests.values() for b in r.seq.block_table)
    for block_id in range(bm.num_blocks):
        assert bm.ref_counts[block_id] == holders[block_id], f"block {block_id} count is wrong"
        assert (block_id in bm.free_block_ids) == (holders[block_id] == 0)
    for name, block_id in bm.block_of_hash.items():
        assert bm.hash_of_block[block_id] == name
    for request in engine.requests.values():
        seq = request.seq
        assert seq.num_computed_tokens <= seq.num_tokens
        if seq.swapped_kv is None and seq.status is not SequenceStatus.WAITING:
            assert len(seq.block_table) >= bm.blocks_for(seq.num_computed_tokens)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_operations_leave_every_block_free(tiny_loaded, seed: int) -> None:
    rng = random.Random(seed)
    engine = engine_with(tiny_loaded, num_blocks=24, max_num_batched_tokens=16, max_num_seqs=6)

    def random_draws(batch) -> SamplerOutput:
        tokens = [rng.randrange(3, 400) for s in batch if s.samples]
        return SamplerOutput(tokens, [None] * len(tokens))

    engine.runner.execute = random_draws
    shared_prefix = [rng.randrange(3, 400) for _ in range(9)]
    finished, aborted, added = set(), set(), 0
    for op in range(5000):
        live = list(engine.requests)
        roll = rng.random()
        if roll < 0.25 or not live:
            prompt = ([*shared_prefix] if rng.random() < 0.5 else []) + [
                rng.randrange(3, 400) for _ in range(rng.randrange(1, 40))
            ]
            params = SamplingParams(max_tokens=rng.randrange(1, 30), temperature=0, ignore_eos=True)
            engine.add(f"r{added}", prompt, params, cache_namespace=rng.choice(["a", "b"]))
            added += 1
        elif roll < 0.6:
            for out in engine.step():
                if out.finished:
                    finished.add(out.request_id)
        elif roll < 0.7:
            request_id = rng.choice(live)
            engine.abort(request_id)
            aborted.add(request_id)
        elif roll < 0.85:
            candidates = [r for r in live if engine.requests[r].seq.status is not SequenceStatus.SUSPENDED]
            if candidates:
                engine.suspend(rng.choice(candidates), rng.choice(list(SuspendMode)))
        else:
            candidates = list(engine.scheduler.suspended)
            if candidates:
                engine.resume(rng.choice(candidates))
        if op % 50 == 0:
            check_invariants(engine)
    for request_id in list(engine.scheduler.suspended):
        engine.resume(request_id)
    while engine.has_unfinished_requests:
        for out in engine.step():
            if out.finished:
                finished.add(out.request_id)
    check_invariants(engine)
    assert not engine.requests
    assert finished | aborted == {f"r{i}" for i in range(added)} and not finished & aborted
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    swap = engine.runner.swap_space
    assert swap.num_free_blocks == swap.num_blocks  # every swapped block came back or was released
    assert engine.stats().prefix_cache_hits > 0
