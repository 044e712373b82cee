"""A small pool of tool-model instances (speech decoders, OCR engines), one per concurrent call.

The models behind the tools are not reentrant (a PocketSphinx decoder keeps the utterance it is
decoding), so one shared instance under one lock let a single long call hold every other caller for
minutes. A pool of `size` instances lets that many calls run at once, each on its own instance;
instances load on first need, so an idle server holds none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class InstancePool(Generic[T]):
    """Up to `size` instances made by `make`, each lent to one caller at a time."""

    def __init__(self, make: Callable[[], T], size: int) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least 1 instance, got {size}")
        self._make = make
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[T] = []
        self._idle_lock = threading.Lock()  # held only to pop or push, never while a model runs

    @contextmanager
    def use(self) -> Iterator[T]:
        """An instance for this caller alone; waits while all `size` are lent out."""
        with self._slots:
            with self._idle_lock:
                instance = self._idle.pop() if self._idle else None
            if instance is None:
                instance = self._make()  # outside the lock: loading a model takes seconds
            yield instance
            # Returned only after a call that ended cleanly: a call that raised may have left the
            # model mid-utterance, so that instance is dropped and a fresh one made when needed.
            with self._idle_lock:
                self._idle.append(instance)
