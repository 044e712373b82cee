"""Module-level functions for `ProcessInstancePool` tests: they travel to worker processes by name."""

from __future__ import annotations

import itertools
import os
from typing import Any

_made = itertools.count()


class Instance:
    """Stands for a model: which process made it, and the how-manieth it is there."""

    def __init__(self) -> None:
        self.pid, self.number = os.getpid(), next(_made)


def make_instance() -> Instance:
    return Instance()


def identify(instance: Instance) -> tuple[int, int]:
    return instance.pid, instance.number


def fail(instance: Instance, message: str) -> None:
    raise ValueError(message)


def die(instance: Instance) -> None:
    os._exit(3)  # as a crash in a model's C code would end the worker


def wait_for_other(instance: Instance, inside: Any, other_done: Any) -> bool:
    """Say this call is inside its worker, then whether the other call finished meanwhile."""
    inside.set()
    return other_done.wait(60)


def mark_done(instance: Instance, done: Any) -> int:
    done.set()
    return instance.pid
