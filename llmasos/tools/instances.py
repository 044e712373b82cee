"""Pools of tool-model instances (speech decoders, OCR engines), one per concurrent call.

The models behind the tools are not reentrant (a PocketSphinx decoder keeps the utterance it is
decoding), so one shared instance under one lock let a single long call hold every other caller for
minutes. Two pools, by how the model runs:
- `InstancePool`: instances in this process, for models that release the GIL while they compute
  (onnxruntime, under `ocr`: a thread counted 2,127 ticks of 10 ms during a 30 s OCR call).
- `ProcessInstancePool`: instances in worker processes, for models that hold the GIL throughout
  (PocketSphinx: 5 s of noise took 19 s to decode, and no other thread of the process ran meanwhile,
  the server's event loop and kernel included).
Instances load on first need, so an idle server holds none.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from llmasos.errors import LLMasOSError

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


class ProcessInstancePool:
    """Up to `size` worker processes, each holding one instance made by `make` on its first call.

    `make` and the functions run must be module-level (they travel to the worker by name). Workers
    are spawned, never forked: the server has threads, and a fork copies their locks mid-use.
    """

    def __init__(self, make: Callable[[], Any], size: int, what: str) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least 1 worker process, got {size}")
        self._make, self.size, self._what = make, size, what
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """`fn(instance, *args)` run in a worker process; its result (or error) comes back."""
        executor = self._running()
        try:
            return executor.submit(_run_with_instance, self._make, fn, args)
        except BrokenProcessPool:  # a worker died since the last call: start afresh, once
            self._discard(executor)
            return self._running().submit(_run_with_instance, self._make, fn, args)

    def _running(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("spawn")
                self._executor = ProcessPoolExecutor(self.size, mp_context=context)
            return self._executor

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(instance, *args)` in a worker process, waited for."""
        future = self.submit(fn, *args)
        try:
            return future.result()
        except BrokenProcessPool:  # a worker died (killed, or crashed in the model's C code)
            self._discard(None)
            raise LLMasOSError(f"the {self._what} worker process stopped unexpectedly; try again") from None

    def shutdown(self) -> None:
        """Stop the worker processes (the next call starts new ones)."""
        self._discard(None)

    def _discard(self, broken: ProcessPoolExecutor | None) -> None:
        with self._lock:
            executor = self._executor
            if broken is not None and executor is not broken:
                return  # another call has already replaced it
            self._executor = None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


_WORKER_INSTANCES: dict[Callable[[], Any], Any] = {}  # in a worker process: its instance per `make`


def _run_with_instance(make: Callable[[], Any], fn: Callable[..., T], args: tuple) -> T:
    instance = _WORKER_INSTANCES.get(make)
    if instance is None:
        instance = _WORKER_INSTANCES[make] = make()
    try:
        return fn(instance, *args)
    except BaseException:
        # The instance may be left mid-call (a decoder mid-utterance): the next call makes a new one.
        _WORKER_INSTANCES.pop(make, None)
        raise
