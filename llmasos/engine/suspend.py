"""What suspending a sequence costs, by mode, and what a suspend or resume actually took.

The engine offers three ways to set a generation aside (see `SuspendMode`); the kernel above
chooses among them from these costs (context length, expected wait, memory pressure).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmasos.engine.sequence import SuspendMode


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
