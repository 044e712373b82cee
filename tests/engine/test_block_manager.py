"""BlockManager: block counts, allocation that grows with the sequence, and frees that return everything."""

from __future__ import annotations

import pytest
import torch

from llmasos.engine.block_manager import BlockManager
from llmasos.engine.sampling import SamplingParams, SamplingState
from llmasos.engine.sequence import Sequence


def make_seq(seq_id: str, num_prompt_tokens: int, max_tokens: int = 8) -> Sequence:
    state = SamplingState.create(SamplingParams(), torch.device("cpu"))
    return Sequence(seq_id, list(range(3, 3 + num_prompt_tokens)), state, max_tokens)


def assert_all_free(bm: BlockManager) -> None:
    assert bm.num_free_blocks == bm.num_blocks
    assert bm.num_used_blocks == 0
    assert sorted(bm.free_block_ids) == list(range(bm.num_blocks))
    assert bm.ref_counts == [0] * bm.num_blocks


@pytest.mark.parametrize(
    ("num_tokens", "blocks"), [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3), (16, 4), (17, 5)]
)
def test_blocks_for_rounds_up_to_whole_blocks(num_tokens: int, blocks: int) -> None:
    assert BlockManager(num_blocks=8, block_size=4).blocks_for(num_tokens) == blocks


@pytest.mark.parametrize(("prompt_len", "blocks"), [(4, 1), (8, 2), (9, 3), (1, 1), (15, 4)])
def test_allocate_gives_a_prompt_exactly_the_blocks_it_needs(prompt_len: int, blocks: int) -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq("a", prompt_len)
    assert bm.num_new_blocks(seq, prompt_len) == blocks
    bm.allocate(seq, prompt_len)
    assert len(seq.block_table) == blocks
    assert len(set(seq.block_table)) == blocks
    assert bm.num_free_blocks == 8 - blocks
    assert all(bm.ref_counts[b] == 1 for b in seq.block_table)


def test_growth_takes_a_new_block_only_at_a_block_boundary() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq("a", 7)
    bm.allocate(seq, 7)
    seq.num_computed_tokens = 7
    assert len(seq.block_table) == 2
    # Token 8 still fits the second block; token 9 needs a third.
    assert bm.num_new_blocks(seq, 1) == 0
    bm.allocate(seq, 1)
    seq.num_computed_tokens = 8
    assert len(seq.block_table) == 2
    assert bm.num_new_blocks(seq, 1) == 1
    bm.allocate(seq, 1)
    assert len(seq.block_table) == 3
    assert bm.num_free_blocks == 5


def test_allocate_then_free_returns_every_block() -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    seqs = [make_seq("a", 5), make_seq("b", 12), make_seq("c", 1), make_seq("d", 9)]
    for seq in seqs:
        bm.allocate(seq, seq.num_tokens)
        seq.num_computed_tokens = seq.num_tokens
    tables = [b for s in seqs for b in s.block_table]
    assert len(tables) == 2 + 3 + 1 + 3
    assert len(set(tables)) == len(tables), "two sequences share a block"
    assert bm.num_free_blocks == 10 - len(tables)
    # Free in an order unlike the allocation order.
    for seq in (seqs[1], seqs[3], seqs[0], seqs[2]):
        bm.free(seq)
        assert seq.block_table == []
        assert seq.num_computed_tokens == 0
    assert_all_free(bm)


def test_blocks_freed_by_one_sequence_are_reused_by_the_next() -> None:
    bm = BlockManager(num_blocks=3, block_size=4)
    a = make_seq("a", 12)
    bm.allocate(a, 12)
    assert bm.num_free_blocks == 0
    bm.free(a)
    b = make_seq("b", 12)
    bm.allocate(b, 12)
    assert sorted(b.block_table) == [0, 1, 2]
    bm.free(b)
    assert_all_free(bm)


def test_can_allocate_is_false_when_blocks_are_short() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    a = make_seq("a", 12)
    bm.allocate(a, 12)  # 3 of 4 blocks
    b = make_seq("b", 8)
    assert not bm.can_allocate(b, 8)  # needs 2, 1 free
    assert bm.can_allocate(b, 4)  # a chunk of one block fits
    assert bm.can_allocate(b, 1)
    with pytest.raises(RuntimeError):
        bm.allocate(b, 8)
    # A refused allocation changes nothing.
    assert b.block_table == []
    assert bm.num_free_blocks == 1
    bm.free(a)
    assert bm.can_allocate(b, 8)


def test_free_of_a_sequence_without_blocks_is_harmless() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    a = make_seq("a", 5)
    bm.free(a)
    assert_all_free(bm)
