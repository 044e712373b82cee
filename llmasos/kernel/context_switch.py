"""Context switch: how to set a running generation aside, chosen by what each way costs.

The engine offers the mechanisms and their costs (`suspend_costs`); this module is the policy.
Leaving the KV resident (KEEP) costs nothing to resume but holds pool memory, so it is used only
when the pool has room to spare and the wait should be short. Otherwise the cheaper of copying
the KV to host memory (SWAP) and recomputing it later (RECOMPUTE) wins: short contexts recompute
in less time than a copy round trip costs, long ones are swapped.
"""

from __future__ import annotations

from llmasos.engine.sequence import SuspendMode
from llmasos.engine.suspend import SuspendCost

#: A suspension expected to last less than this keeps its KV resident when the pool has room.
SHORT_WAIT_SECONDS = 2.0
#: The pool "has room" while at least this fraction of its blocks is free.
FREE_FRACTION_FOR_KEEP = 0.5


def choose_suspend_mode(
    costs: dict[SuspendMode, SuspendCost], expected_wait_seconds: float, free_fraction: float
) -> SuspendMode:
    """The mode with the least cost for this sequence, now."""
    if expected_wait_seconds < SHORT_WAIT_SECONDS and free_fraction >= FREE_FRACTION_FOR_KEEP:
        return SuspendMode.KEEP
    swap, recompute = costs[SuspendMode.SWAP], costs[SuspendMode.RECOMPUTE]
    # A swap pays its copy twice (out now, in later); a recompute pays only on resume.
    return SuspendMode.RECOMPUTE if recompute.resume_seconds < 2 * swap.resume_seconds else SuspendMode.SWAP
