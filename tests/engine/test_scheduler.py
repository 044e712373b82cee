"""Scheduler: continuous batching under a token budget, chunked prefill, admission and preemption.

No model: a step is simulated by advancing `num_computed_tokens` by what was scheduled and appending a
token to every sequence whose item `samples`; a sequence finishes after `max_tokens` outputs.
"""

from __future__ import annotations

import random

import torch

from llmasos.engine.block_manager import BlockManager
from llmasos.engine.sampling import SamplingParams, SamplingState
from llmasos.engine.scheduler import Scheduler, SchedulerOutput
from llmasos.engine.sequence import Sequence, SequenceStatus

NEXT_TOKEN = 7


def make_seq(seq_id: str, num_prompt_tokens: int, max_tokens: int = 4) -> Sequence:
    state = SamplingState.create(SamplingParams(), torch.device("cpu"))
    return Sequence(seq_id, list(range(3, 3 + num_prompt_tokens)), state, max_tokens)


def make_scheduler(
    num_blocks: int = 64, block_size: int = 4, max_num_seqs: int = 8, max_num_batched_tokens: int = 64
) -> Scheduler:
    return Scheduler(BlockManager(num_blocks, block_size), max_num_seqs, max_num_batched_tokens)


def check_invariants(sched: Scheduler) -> None:
    bm = sched.block_manager
    held = [b for s in sched.running for b in s.block_table]
    assert len(held) == len(set(held)), "a block is held twice"
    assert not set(held) & set(bm.free_block_ids), "a held block is also free"
    assert len(held) + bm.num_free_blocks == bm.num_blocks, "a block was lost"
    assert len(sched.running) <= sched.max_num_seqs
    for seq in sched.running:
        assert seq.status is SequenceStatus.RUNNING
        assert len(seq.block_table) * bm.block_size >= seq.num_computed_tokens
    for seq in sched.waiting:
        assert seq.status is SequenceStatus.WAITING
        assert seq.block_table == [] and seq.num_computed_tokens == 0


def step(sched: Scheduler) -> SchedulerOutput:
    """One simulated step: schedule, 'run' the batch, sample for the sequences that reached their end."""
    return run_step(sched, sched.schedule())


def run_step(sched: Scheduler, out: SchedulerOutput) -> SchedulerOutput:
    """'Run' a scheduled batch (see `step`)."""
    assert out.num_batched_tokens <= sched.max_num_batched_tokens
    ids = [item.seq.seq_id for item in out.scheduled]
    assert len(ids) == len(set(ids)), "a sequence scheduled twice in one step"
    for item in out.scheduled:
        seq = item.seq
        assert seq.status is SequenceStatus.RUNNING
        assert 0 < item.num_new_tokens <= seq.num_uncomputed_tokens
        # The blocks for this step's tokens were allocated before the step runs.
        assert len(seq.block_table) * sched.block_manager.block_size >= (
            seq.num_computed_tokens + item.num_new_tokens
        )
        samples = item.samples
        seq.num_computed_tokens += item.num_new_tokens
        if samples:
            seq.append_token(NEXT_TOKEN)
            if seq.num_output_tokens >= seq.max_tokens:
                seq.status = SequenceStatus.FINISHED
                sched.remove(seq)
    check_invariants(sched)
    return out


def run_to_completion(sched: Scheduler, max_steps: int = 1000) -> list[SchedulerOutput]:
    outs = []
    while sched.has_unfinished:
        out = step(sched)
        assert not out.is_empty, f"scheduler stalled: {sched.waiting} {sched.running}"
        outs.append(out)
        assert len(outs) < max_steps
    return outs


def shares(out: SchedulerOutput) -> dict[str, int]:
    return {item.seq.seq_id: item.num_new_tokens for item in out.scheduled}


def test_token_budget_is_respected_every_step_and_all_finish() -> None:
    sched = make_scheduler(num_blocks=256, max_num_batched_tokens=16)
    seqs = [make_seq(f"s{i}", n, max_tokens=5) for i, n in enumerate([3, 40, 17, 1, 16, 29, 8])]
    for seq in seqs:
        sched.add(seq)
    outs = run_to_completion(sched)
    assert all(out.num_batched_tokens <= 16 for out in outs)
    assert max(out.num_batched_tokens for out in outs) == 16  # the budget is also used, not just obeyed
    assert all(s.is_finished and s.num_output_tokens == 5 for s in seqs)
    assert sched.block_manager.num_free_blocks == 256


def test_decode_tokens_are_scheduled_before_new_prefills() -> None:
    sched = make_scheduler(max_num_batched_tokens=10)
    a = make_seq("a", 5, max_tokens=10)
    sched.add(a)
    step(sched)  # a's prefill; it is now decoding
    b = make_seq("b", 20, max_tokens=10)
    sched.add(b)
    out = step(sched)
    assert [(item.seq.seq_id, item.num_new_tokens) for item in out.scheduled] == [("a", 1), ("b", 9)]
    assert out.scheduled[0].samples
    assert not out.scheduled[1].samples  # b's prompt is only partly computed


def test_long_prompt_is_chunked_while_a_running_sequence_decodes_every_step() -> None:
    sched = make_scheduler(max_num_batched_tokens=8)
    a = make_seq("a", 3, max_tokens=50)
    sched.add(a)
    step(sched)
    b = make_seq("b", 30, max_tokens=3)
    sched.add(b)
    chunks = []
    while b.num_output_tokens == 0:
        a_outputs_before = a.num_output_tokens
        out = step(sched)
        got = shares(out)
        assert got["a"] == 1  # a's decode token, every step
        assert a.num_output_tokens == a_outputs_before + 1
        chunks.append(got["b"])
    assert chunks == [7, 7, 7, 7, 2]  # 30 prompt tokens, 7 per step beside a's decode token
    assert sum(chunks) == 30
    # Both then decode one token each per step.
    assert shares(step(sched)) == {"a": 1, "b": 1}


def test_max_num_seqs_is_respected() -> None:
    sched = make_scheduler(max_num_seqs=2)
    seqs = [make_seq(f"s{i}", 2, max_tokens=3) for i in range(5)]
    for seq in seqs:
        sched.add(seq)
    out = step(sched)
    assert set(shares(out)) == {"s0", "s1"}
    assert [s.seq_id for s in sched.waiting] == ["s2", "s3", "s4"]
    outs = run_to_completion(sched)
    assert all(len(o.scheduled) <= 2 for o in outs)
    assert all(s.is_finished for s in seqs)


def test_admission_is_first_come_first_served() -> None:
    sched = make_scheduler(max_num_seqs=3)
    seqs = [make_seq(f"s{i}", n, max_tokens=2) for i, n in enumerate([6, 1, 9, 2, 4, 3, 5])]
    for seq in seqs:
        sched.add(seq)
    admitted: list[str] = []  # in the order of their first share of a step
    for out in run_to_completion(sched):
        admitted += [i.seq.seq_id for i in out.scheduled if i.seq.seq_id not in admitted]
    assert admitted == [s.seq_id for s in seqs]


def test_head_of_the_queue_is_not_overtaken_by_a_shorter_prompt() -> None:
    sched = make_scheduler(num_blocks=4, max_num_batched_tokens=64)
    a = make_seq("a", 12, max_tokens=2)  # 3 of 4 blocks
    sched.add(a)
    step(sched)
    big = make_seq("big", 8, max_tokens=1)  # needs 2 blocks
    small = make_seq("small", 2, max_tokens=1)  # would fit the free block
    sched.add(big)
    sched.add(small)
    out = step(sched)
    assert set(shares(out)) == {"a"}
    assert [s.seq_id for s in sched.waiting] == ["big", "small"]


def test_a_sequence_waits_when_blocks_are_short_and_is_admitted_when_they_free() -> None:
    sched = make_scheduler(num_blocks=4, max_num_batched_tokens=64)
    a = make_seq("a", 12, max_tokens=2)
    b = make_seq("b", 8, max_tokens=2)
    sched.add(a)
    sched.add(b)
    out = step(sched)  # a takes 3 blocks; b needs 2 of the 1 left
    assert set(shares(out)) == {"a"}
    assert b.status is SequenceStatus.WAITING and list(sched.waiting) == [b]
    out = step(sched)  # a decodes its last token into its 4th block and finishes
    assert set(shares(out)) == {"a"} and a.is_finished
    assert b.status is SequenceStatus.WAITING
    out = step(sched)
    assert shares(out) == {"b": 8}
    assert b.status is SequenceStatus.RUNNING
    run_to_completion(sched)
    assert b.is_finished and b.num_output_tokens == 2
    assert sched.block_manager.num_free_blocks == 4


def test_newest_running_sequence_is_preempted_when_blocks_run_out_and_later_completes() -> None:
    sched = make_scheduler(num_blocks=4, max_num_seqs=2, max_num_batched_tokens=64)
    a = make_seq("a", 6, max_tokens=5)
    b = make_seq("b", 6, max_tokens=5)
    c = make_seq("c", 2, max_tokens=1)
    for seq in (a, b, c):
        sched.add(seq)
    out = step(sched)  # a and b prefill (2 blocks each, the whole pool); c has no slot
    assert set(shares(out)) == {"a", "b"}
    assert not out.preempted
    step(sched)  # tokens 7 and 8 of each still fit their two blocks
    step(sched)
    assert a.num_computed_tokens == b.num_computed_tokens == 8
    b_tokens = list(b.token_ids)
    assert sched.block_manager.num_free_blocks == 0

    out = step(sched)  # a's 9th token needs a third block: b, the newest, makes room
    assert out.preempted == [b]
    assert shares(out) == {"a": 1}
    assert b.status is SequenceStatus.WAITING
    assert b.block_table == [] and b.num_computed_tokens == 0
    assert b.num_preemptions == 1 and a.num_preemptions == 0
    assert list(sched.waiting) == [b, c]  # b goes back in front of c
    assert sched.running == [a]
    assert b.token_ids == b_tokens  # its tokens are kept, to be recomputed

    run_to_completion(sched)
    assert a.is_finished and a.num_output_tokens == 5
    assert b.is_finished and b.num_output_tokens == 5
    assert b.token_ids[: len(b_tokens)] == b_tokens
    assert c.is_finished
    assert sched.block_manager.num_free_blocks == 4
    assert sched.block_manager.ref_counts == [0] * 4


def test_several_preemptions_in_one_step_keep_arrival_order_at_the_front() -> None:
    sched = make_scheduler(num_blocks=6, max_num_batched_tokens=64)
    a, b, c = make_seq("a", 16, max_tokens=3), make_seq("b", 4, max_tokens=3), make_seq("c", 4, max_tokens=3)
    d = make_seq("d", 1, max_tokens=1)
    for seq in (a, b, c):
        sched.add(seq)
    step(sched)  # 4 + 1 + 1 blocks: the pool is full
    sched.add(d)
    out = step(sched)  # a needs a 5th block: c goes; b then needs one too and goes itself
    assert out.preempted == [c, b]
    assert shares(out) == {"a": 1}
    assert list(sched.waiting) == [b, c, d]
    run_to_completion(sched)
    assert all(s.is_finished for s in (a, b, c, d))


def test_preempted_sequence_is_recomputed_in_full_before_it_samples_again() -> None:
    sched = make_scheduler(num_blocks=4, max_num_seqs=2, max_num_batched_tokens=64)
    a = make_seq("a", 6, max_tokens=5)
    b = make_seq("b", 6, max_tokens=5)
    sched.add(a)
    sched.add(b)
    for _ in range(4):
        step(sched)
    assert b.num_preemptions == 1
    outputs_at_preemption = b.num_output_tokens
    # While b waits, a alone holds the pool; once b is back, its first share is all its tokens.
    while b.status is SequenceStatus.WAITING:
        assert b.num_output_tokens == outputs_at_preemption
        num_tokens = b.num_tokens
        out = step(sched)
    assert shares(out)["b"] == num_tokens
    assert b.num_output_tokens == outputs_at_preemption + 1


def test_random_workload_keeps_every_invariant() -> None:
    rng = random.Random(1234)
    sched = make_scheduler(num_blocks=24, block_size=4, max_num_seqs=4, max_num_batched_tokens=12)
    seqs = []
    for i in range(200):
        if rng.random() < 0.4:
            seq = make_seq(f"s{i}", rng.randint(1, 40), max_tokens=rng.randint(1, 10))
            # Every sequence must fit the pool alone, as the engine guarantees on add().
            assert seq.num_prompt_tokens + seq.max_tokens <= 24 * 4
            seqs.append(seq)
            sched.add(seq)
        elif sched.has_unfinished:
            step(sched)
    run_to_completion(sched)
    assert seqs and all(s.is_finished and s.num_output_tokens == s.max_tokens for s in seqs)
    assert sum(s.num_preemptions for s in seqs) > 0  # the pool was tight enough to preempt
    assert sched.block_manager.num_free_blocks == 24
    assert sched.block_manager.ref_counts == [0] * 24


def test_batch_invariant_steps_hold_one_kind_of_work_and_everything_finishes() -> None:
    rng = random.Random(99)
    sched = Scheduler(BlockManager(24, 4), 4, 12, batch_invariant=True)
    seqs, kinds_seen = [], []
    while len(seqs) < 80 or sched.has_unfinished:
        if len(seqs) < 80 and (rng.random() < 0.4 or not sched.has_unfinished):
            seqs.append(make_seq(f"s{len(seqs)}", rng.randint(1, 40), max_tokens=rng.randint(1, 10)))
            sched.add(seqs[-1])
            continue
        out = sched.schedule()
        kinds = {sched.kind_of(item.seq) for item in out.scheduled}
        assert len(kinds) == 1, "a step mixed decode tokens with prompt chunks"
        assert all(item.num_new_tokens == 1 for item in out.scheduled) or kinds == {"prefill"}
        kinds_seen += kinds
        run_step(sched, out)
    assert all(s.is_finished and s.num_output_tokens == s.max_tokens for s in seqs)
    assert set(kinds_seen) == {"decode", "prefill"}
    assert sum(s.num_preemptions for s in seqs) > 0  # the pool was tight enough to preempt


def test_batch_invariant_tokens_after_the_prompt_go_one_per_step_and_only_the_last_samples() -> None:
    sched = Scheduler(BlockManager(64, 4), 8, 64, batch_invariant=True)
    taken = make_seq("taken", 10, max_tokens=8)
    for token in (11, 12, 13):  # produced on a node that was lost
        taken.append_token(token)
    sched.add(taken)
    plans = []
    for _ in range(4):
        out = sched.schedule()
        plans.append(shares_and_samples(out))
        run_step(sched, out)
    assert plans == [
        {"taken": (10, False)},  # the prompt, as one chunk
        {"taken": (1, False)},  # then each earlier output as a decode step computes it
        {"taken": (1, False)},
        {"taken": (1, True)},  # the last one samples the next token
    ]
    assert taken.num_output_tokens == 4


def shares_and_samples(out: SchedulerOutput) -> dict[str, tuple[int, bool]]:
    return {item.seq.seq_id: (item.num_new_tokens, item.samples) for item in out.scheduled}
