"""Scheduling policies: which live processes hold the engine's batch slots at each step.

Each policy is a small class over the process table with `select(processes, slots, now)` and
`charge(process, work, now)` (see `base.Policy`), testable without torch or an engine. Pick one by
name with `make_policy`; "default" is priority classes with weighted fair share inside each class.
"""

from __future__ import annotations

from typing import Any

from llmasos.errors import InvalidRequestError
from llmasos.kernel.policies.base import Aging, Policy
from llmasos.kernel.policies.fair_share import ClassedFairSharePolicy, FairSharePolicy, VirtualClock
from llmasos.kernel.policies.simple import FifoPolicy, PriorityPolicy, RoundRobinPolicy

POLICIES: dict[str, type[Policy]] = {
    "fifo": FifoPolicy,
    "priority": PriorityPolicy,
    "round_robin": RoundRobinPolicy,
    "fair_share": FairSharePolicy,
    "classed_fair_share": ClassedFairSharePolicy,
    "default": ClassedFairSharePolicy,
}


def make_policy(name: str, **options: Any) -> Policy:
    """A new policy called `name` (a key of POLICIES), built with `options` (its constructor's keywords)."""
    try:
        policy_class = POLICIES[name.strip().lower().replace("-", "_")]
    except KeyError:
        raise InvalidRequestError(
            f"unknown scheduling policy {name!r}; use one of: {', '.join(POLICIES)}"
        ) from None
    try:
        return policy_class(**options)
    except TypeError as exc:  # an option the policy does not take
        raise InvalidRequestError(f"bad options for scheduling policy {name!r}: {exc}") from None


__all__ = [
    "POLICIES",
    "Aging",
    "ClassedFairSharePolicy",
    "FairSharePolicy",
    "FifoPolicy",
    "Policy",
    "PriorityPolicy",
    "RoundRobinPolicy",
    "VirtualClock",
    "make_policy",
]
