"""Setting a sequence aside: what each way costs, by mode, what a suspend or resume actually took,
and the engine's `suspend`/`resume` themselves (`Suspension`, mixed into `LLMEngine`).

The engine offers three ways to set a generation aside (see `SuspendMode`); the kernel above
chooses among them from these costs (context length, expected wait, memory pressure).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmasos.engine.sequence import SequenceStatus, SuspendMode
from llmasos.errors import InvalidRequestError

if TYPE_CHECKING:
    from llmasos.config import EngineConfig
    from llmasos.engine.block_manager import BlockManager
    from llmasos.engine.model_runner import ModelRunner
    from llmasos.engine.requests import Request
    from llmasos.engine.scheduler import Scheduler
    from llmasos.model.loader import LoadedModel


@dataclass(frozen=True)
class SuspendCost:
    """Estimated cost of suspending one sequence in one mode and resuming it later."""

    mode: SuspendMode
    kv_bytes_held: int  # KV-pool bytes the sequence keeps while suspended
    host_bytes: int  # host-memory bytes its KV occupies while suspended
    resume_seconds: float  # estimated time to bring it back (copy in, or recompute)


@dataclass(frozen=True)
class SuspendReport:
    """What one suspend or resume did."""

    request_id: str
    mode: SuspendMode
    num_tokens: int  # context tokens whose KV was kept, moved or dropped
    num_blocks: int  # KV-pool blocks freed (suspend) or taken (resume)
    bytes_moved: int  # bytes copied between the pool and host memory
    seconds: float
    pending: bool = False  # resume only: waiting for free blocks; the copy happens at admission


def estimate_costs(
    num_tokens: int,
    num_blocks: int,
    bytes_per_token: int,
    bytes_per_block: int,
    copy_bytes_per_second: float,
    prefill_tokens_per_second: float,
) -> dict[SuspendMode, SuspendCost]:
    """Costs of each mode for a sequence with `num_tokens` computed tokens in `num_blocks` blocks."""
    kv_bytes = num_tokens * bytes_per_token
    return {
        SuspendMode.SWAP: SuspendCost(SuspendMode.SWAP, 0, kv_bytes, kv_bytes / copy_bytes_per_second),
        SuspendMode.KEEP: SuspendCost(SuspendMode.KEEP, num_blocks * bytes_per_block, 0, 0.0),
        SuspendMode.RECOMPUTE: SuspendCost(
            SuspendMode.RECOMPUTE, 0, 0, num_tokens / max(prefill_tokens_per_second, 1e-9)
        ),
    }


class Suspension:
    """The suspend half of `LLMEngine`: set a live request aside, bring it back, and what each way
    would cost."""

    config: EngineConfig
    loaded: LoadedModel
    runner: ModelRunner
    block_manager: BlockManager
    scheduler: Scheduler
    copy_bytes_per_second: float  # measured rates, smoothed (LLMEngine.__init__ sets them)
    prefill_tokens_per_second: float
    _live: Callable[[str], Request]

    def suspend(self, request_id: str, mode: SuspendMode | str = SuspendMode.SWAP) -> SuspendReport:
        """Set a live request aside until `resume`; it keeps its place exactly (same tokens, same
        sampler state). `mode` says where its KV waits: host memory, the pool, or nowhere. A request
        already set aside with its KV kept in the pool may be suspended again, to move that KV out
        (the kernel does when the pool runs short) without first making it runnable."""
        seq = self._live(request_id).seq
        mode = _suspend_mode(mode)
        start = time.perf_counter()
        if seq.status is not SequenceStatus.SUSPENDED:
            self.scheduler.suspend(seq)
        elif seq.suspend_mode is not SuspendMode.KEEP:
            where = seq.suspend_mode.value if seq.suspend_mode else "set aside"
            raise InvalidRequestError(
                f"request {request_id!r} is already suspended (KV {where}); resume it first"
            )
        num_tokens, num_blocks, moved = seq.num_computed_tokens, 0, 0
        if seq.swapped_kv is not None:  # resumed but never re-admitted: its KV is still on the host
            mode = SuspendMode.SWAP
        elif mode is SuspendMode.SWAP and seq.block_table:
            seq.swapped_kv = self.runner.swap_out(seq.block_table, num_tokens)
            num_blocks, moved = len(seq.block_table), seq.swapped_kv.nbytes
            self.block_manager.free(seq)
            seq.num_computed_tokens = num_tokens  # the tokens are computed; their KV is on the host
        elif mode is SuspendMode.RECOMPUTE:
            num_blocks = len(seq.block_table)
            self.block_manager.free(seq)
        seq.suspend_mode = mode
        seconds = time.perf_counter() - start
        if moved and seconds > 0:
            self.copy_bytes_per_second = 0.5 * self.copy_bytes_per_second + 0.5 * moved / seconds
        return SuspendReport(request_id, mode, num_tokens, num_blocks, moved, seconds)

    def resume(self, request_id: str) -> SuspendReport:
        """Make a suspended request runnable again, where it stopped. A host copy is brought back
        at once if blocks are free, else when the scheduler admits it (`pending`)."""
        seq = self._live(request_id).seq
        if seq.status is not SequenceStatus.SUSPENDED:
            raise InvalidRequestError(f"request {request_id!r} is not suspended")
        start = time.perf_counter()
        mode = seq.suspend_mode or SuspendMode.RECOMPUTE
        seq.suspend_mode = None
        num_blocks = moved = 0
        swapped_in = seq.swapped_kv is not None and self.block_manager.can_allocate(seq, 0)
        if swapped_in:
            self.block_manager.allocate(seq, 0)
            self.runner.swap_in(seq.block_table, seq.swapped_kv)
            num_blocks, moved = len(seq.block_table), seq.swapped_kv.nbytes
            seq.swapped_kv = None
        pending = seq.swapped_kv is not None
        # Its KV is resident (kept, or copied back just now): it runs next step. Else it goes first
        # in line for blocks: it had its turn.
        self.scheduler.resume(seq, resident=mode is SuspendMode.KEEP or swapped_in)
        return SuspendReport(
            request_id, mode, seq.num_computed_tokens, num_blocks, moved, time.perf_counter() - start, pending
        )

    def suspend_costs(self, request_id: str) -> dict[SuspendMode, SuspendCost]:
        """What suspending this request would cost in each mode, from measured rates."""
        seq = self._live(request_id).seq
        per_token = self.loaded.config.kv_bytes_per_token(self.runner.kv_cache.element_size())
        return estimate_costs(
            seq.num_computed_tokens,
            len(seq.block_table),
            per_token,
            per_token * self.config.block_size,
            self.copy_bytes_per_second,
            self.prefill_tokens_per_second,
        )


def _suspend_mode(mode: SuspendMode | str) -> SuspendMode:
    try:
        return SuspendMode(mode)
    except ValueError:
        modes = ", ".join(m.value for m in SuspendMode)
        raise InvalidRequestError(f"unknown suspend mode {mode!r}; use one of {modes}") from None
