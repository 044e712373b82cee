"""A sequence: the engine's token state of one generation (token ids, KV blocks, sampling)."""

from __future__ import annotations

import time
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from llmasos.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from llmasos.engine.sampling import SamplingState


class SequenceStatus(Enum):
    WAITING = "waiting"  # queued for admission (new, preempted, or resumed and awaiting blocks)
    RUNNING = "running"  # holds KV blocks and is scheduled every step
    SUSPENDED = "suspended"  # set aside by its owner; see SuspendMode for where its KV is
    FINISHED = "finished"


class SuspendMode(StrEnum):
    """Where a suspended sequence's keys and values wait. Each has a cost the engine reports."""

    SWAP = "swap"  # copied to host memory, blocks freed; resume copies them back
    KEEP = "keep"  # left resident in the KV pool, just not scheduled; resume is free
    RECOMPUTE = "recompute"  # dropped; resume recomputes them (the prefix cache may help)


class FinishReason(StrEnum):
    STOP = "stop"  # an end-of-turn token or a stop string
    LENGTH = "length"  # max_tokens or the context window
    ABORT = "abort"  # cancelled by its owner


class Sequence:
    """Counters are state; everything derived from them is a property."""

    def __init__(
        self,
        seq_id: str,
        prompt_token_ids: list[int],
        sampling: SamplingState,
        max_tokens: int,
        cache_namespace: str = "default",
    ) -> None:
        self.seq_id = seq_id
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.num_computed_tokens = 0  # tokens whose keys/values are in the KV cache
        self.block_table: list[int] = []
        self.status = SequenceStatus.WAITING
        self.sampling = sampling
        self.max_tokens = max_tokens  # already clamped to the context window
        self.finish_reason: FinishReason | None = None
        self.arrival_time = time.monotonic()
        self.num_preemptions = 0
        # Prefix-cache partition: blocks are shared only between sequences of one namespace.
        self.cache_namespace = cache_namespace
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache at admission
        self.block_hashes: list[bytes] = []  # chained hashes of this sequence's full, computed blocks
        self.suspend_mode: SuspendMode | None = None
        self.swapped_kv: Any = None  # host copy of the KV while suspended in SWAP mode

    @property
    def params(self) -> SamplingParams:
        return self.sampling.params

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return self.num_tokens - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens still to run through the model: the prompt's rest, or the last sampled token."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def __repr__(self) -> str:
        return (
            f"Sequence({self.seq_id!r}, {self.status.value}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})"
        )
