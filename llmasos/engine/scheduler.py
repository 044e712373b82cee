"""Continuous batching: which sequences run this step, and how many of their tokens. No torch.

Every step packs, under a token budget, the decode token of each running sequence and chunks of
prompts (chunked prefill), so a long prompt never stalls running streams for more than one chunk.
Sequences join and leave between steps. When KV blocks run out, the newest running sequence is
preempted: its blocks are freed and it is requeued at the front, to be recomputed later (its own
blocks usually survive in the prefix cache, so the recomputation is mostly a cache hit).

A new sequence is admitted with the longest cached prefix of its prompt; a sequence resumed from
host memory is admitted with fresh blocks that the engine fills from its host copy.

`batch_invariant` (EngineConfig's): steps alternate between decode tokens and prompt chunks instead
of packing both, and tokens after a sequence's prompt go one per step, so every token is computed by
the same kind of step whatever else runs (see EngineConfig.batch_invariant for why).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

from llmasos.engine.block_manager import BlockManager
from llmasos.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class ScheduledSequence:
    """One sequence's share of a step: compute `num_new_tokens` tokens from its first uncomputed."""

    seq: Sequence
    num_new_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this step reaches the sequence's last token, so a next token is sampled."""
        return self.seq.num_computed_tokens + self.num_new_tokens == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    """What the model runner executes this step, and what the scheduler set aside to make room."""

    scheduled: list[ScheduledSequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    # Admitted with fresh blocks that must be filled from their host copy before the forward pass.
    swapped_in: list[Sequence] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    """Admits waiting sequences and packs running ones into steps under a token budget."""

    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        *,
        batch_invariant: bool = False,
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.batch_invariant = batch_invariant
        self.last_kind: str | None = None  # "decode" or "prefill": the last step's, when invariant
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.suspended: dict[str, Sequence] = {}

    @property
    def has_unfinished(self) -> bool:
        """Whether a step has work: suspended sequences wait for their owner, not for steps."""
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out (finished or aborted) and return its blocks."""
        self.detach(seq)
        self.block_manager.free(seq)
        seq.swapped_kv = None

    def detach(self, seq: Sequence) -> None:
        """Take a sequence off every queue, leaving its blocks as they are."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.suspended.pop(seq.seq_id, None)

    def suspend(self, seq: Sequence) -> None:
        """Set a sequence aside until `resume`: off every queue, its blocks as they are (the engine
        moves or frees its KV)."""
        self.detach(seq)
        seq.status = SequenceStatus.SUSPENDED
        self.suspended[seq.seq_id] = seq

    def resume(self, seq: Sequence, *, resident: bool) -> None:
        """Queue a suspended sequence again: running at once if its KV is `resident`, else first in
        line for blocks (it had its turn)."""
        del self.suspended[seq.seq_id]
        if resident:
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
        else:
            seq.status = SequenceStatus.WAITING
            self.waiting.appendleft(seq)

    def schedule(self, only: Collection[str] | None = None) -> SchedulerOutput:
        """This step's batch; with `only`, of those sequences alone (the others wait a step)."""
        if not self.batch_invariant:
            return self._schedule(only, None)
        kinds = self._pending_kinds(only)
        first = "decode" if self.last_kind == "prefill" or "prefill" not in kinds else "prefill"
        if first not in kinds and kinds:
            first = next(iter(kinds))
        out = self._schedule(only, first)
        if out.is_empty:  # e.g. no blocks for a new prompt: let the other kind run
            first = "prefill" if first == "decode" else "decode"
            out = self._schedule(only, first)
        if not out.is_empty:
            self.last_kind = first
        return out

    def kind_of(self, seq: Sequence) -> str:
        """ "prefill" while its prompt is not all computed, else "decode" (one token per step)."""
        return "prefill" if seq.num_computed_tokens < seq.num_prompt_tokens else "decode"

    def _pending_kinds(self, only: Collection[str] | None) -> set[str]:
        running = [s for s in self.running if only is None or s.seq_id in only]
        kinds = {self.kind_of(s) for s in running}
        if len(self.running) < self.max_num_seqs:
            kinds |= {self.kind_of(s) for s in self.waiting if only is None or s.seq_id in only}
        return kinds

    def _wanted(self, seq: Sequence, num_computed: int) -> int:
        """Tokens `seq` would compute this step from `num_computed`: all it lacks, or when batch
        invariant, the rest of its prompt or else one token."""
        if not self.batch_invariant:
            return seq.num_tokens - num_computed
        if num_computed < seq.num_prompt_tokens:
            return seq.num_prompt_tokens - num_computed
        return min(1, seq.num_tokens - num_computed)

    def _schedule(self, only: Collection[str] | None, kind: str | None) -> SchedulerOutput:
        """A batch of every kind of work (kind None), or of "decode" or "prefill" work alone."""
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        # Running sequences first, oldest first: they hold memory and users are watching them.
        for seq in list(self.running):
            if seq not in self.running or (only is not None and seq.seq_id not in only):
                continue  # preempted earlier in this loop to make room, or not asked for
            if kind is not None and self.kind_of(seq) != kind:
                continue
            num_new = min(self._wanted(seq, seq.num_computed_tokens), budget)
            if num_new == 0:
                break
            if not self._make_room(seq, num_new, out):
                continue
            self.block_manager.allocate(seq, num_new)
            out.scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new
        # Then admit waiting sequences in arrival order while budget, slots and blocks allow.
        for seq in [s for s in self.waiting if only is None or s.seq_id in only]:
            if budget <= 0 or len(self.running) >= self.max_num_seqs:
                break
            if kind is not None and self.kind_of(seq) != kind:
                continue
            num_new = self._admit(seq, budget)
            if num_new is None:
                break
            self.waiting.remove(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            if seq.swapped_kv is not None:
                out.swapped_in.append(seq)
            out.scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new
        return out

    def _admit(self, seq: Sequence, budget: int) -> int | None:
        """Give `seq` its blocks (a cached prefix first, if it is new) and return its tokens for
        this step, or None if the pool is short."""
        manager = self.block_manager
        is_new = seq.swapped_kv is None and not seq.block_table
        hits = manager.match_prefix(seq) if is_new else []
        num_new = min(self._wanted(seq, seq.num_computed_tokens + len(hits) * manager.block_size), budget)
        if manager.num_blocks_to_admit(seq, hits, num_new) > manager.num_free_blocks:
            return None
        if is_new:
            manager.take_prefix(seq, hits)
        manager.allocate(seq, num_new)
        return num_new

    def _make_room(self, seq: Sequence, num_new: int, out: SchedulerOutput) -> bool:
        """Preempt the newest running sequences until `seq` fits; False if `seq` itself went."""
        while not self.block_manager.can_allocate(seq, num_new):
            victim = self.running[-1]
            self._preempt(victim)
            out.preempted.append(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)
