"""Calling an actor on a node: its own exception raised as itself, a lost node as NodeLostError."""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import (
    ActorUnavailableError,
    NodeDiedError,
    ObjectLostError,
    OwnerDiedError,
    RayActorError,
    RayTaskError,
    WorkerCrashedError,
)


class NodeLostError(Exception):
    """A node's actor is gone (the node died or was removed)."""


#: What ray.get raises when the actor or the node that held the answer is gone.
NODE_LOST = (
    RayActorError,
    ActorUnavailableError,
    NodeDiedError,
    ObjectLostError,
    OwnerDiedError,
    WorkerCrashedError,
)


def call(ref: Any, timeout: float | None = None) -> Any:
    """`ray.get`, with the actor's own exception raised as itself, and a dead actor as NodeLostError."""
    try:
        return ray.get(ref, timeout=timeout)
    except NODE_LOST as err:
        raise NodeLostError(str(err).splitlines()[0]) from err
    except RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
