"""Audit rows written by a thread of their own, in batches: one transaction and one anchor fsync per
batch, off the threads that must not wait on a disk (the kernel's loop, the admission lock).

A generation's start and end rows are queued (`QueuedRow`); an end row names its start row by the
queued row, whose id is known once the writer has written it (rows are written in the order they
were queued, so a start row is always written before its end). `after_written(callback)` runs the
callback once every row queued before it is durable: the kernel sends a process's final event that
way, so a client that has seen its answer end can already find the record of it.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmasos.security.audit import AuditRecord

logger = logging.getLogger(__name__)

#: Rows written in one transaction at most: enough for a burst of every slot of a model ending at
#: once, small enough that the first row of a burst waits for few others.
MAX_BATCH = 256


@dataclass(eq=False)
class QueuedRow:
    """One audit row waiting for the writer, then its id (`row_id`) once it is durable."""

    record: AuditRecord
    opens: QueuedRow | None = None  # the start row this row ends (its id is known once written)
    row_id: int | None = None  # set when written; stays None if writing it failed
    written: threading.Event = field(default_factory=threading.Event)

    def resolved(self) -> AuditRecord:
        """The record to write, naming its start row's id."""
        if self.opens is None:
            return self.record
        return dataclasses.replace(self.record, opens=self.opens.row_id)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the row is written; its id (None if writing it failed or `timeout` passed)."""
        self.written.wait(timeout)
        return self.row_id


_STOP = object()


class AuditWriter:
    """The thread that appends queued rows with `write` (a batch at a time, in queue order)."""

    def __init__(self, write: Callable[[list[QueuedRow]], None], max_batch: int = MAX_BATCH) -> None:
        self._write = write
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the thread now: it runs at the caller's thread's priority (threads inherit their
        creator's niceness). A server starts it before its HTTP threads lower theirs: every
        generation's start and end rows wait on it, and a writer niced with them got a tenth of a
        core while a step ran, which held each stream's `[DONE]` for tens of milliseconds."""
        self._ensure_thread()

    def submit(self, row: QueuedRow) -> QueuedRow:
        """Queue `row`; it is written soon, after every row queued before it."""
        if self._closed:  # after close (shutdown): written at once, in the caller's thread
            self._write_batch([row])
            return row
        self._ensure_thread()
        self._queue.put(row)
        return row

    def after_written(self, callback: Callable[[], None]) -> None:
        """Run `callback` (in the writer's thread) once every row queued so far is written."""
        if self._closed:
            _run_quietly(callback)
            return
        self._ensure_thread()
        self._queue.put(callback)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row queued so far is written; False if `timeout` passed first."""
        if self._thread is None or self._closed or threading.current_thread() is self._thread:
            return True
        done = threading.Event()
        self.after_written(done.set)
        return done.wait(timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread; later rows are written in their caller's thread."""
        with self._starting:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._starting:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="llmasos-audit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            self._write_batch([item for item in batch if isinstance(item, QueuedRow)])
            for item in batch:
                if callable(item):
                    _run_quietly(item)
            if stop:
                return

    def _write_batch(self, rows: list[QueuedRow]) -> None:
        if rows:
            try:
                self._write(rows)
            except Exception:  # an unwritable log must not stop the rows after it, or their callbacks
                logger.exception("writing %d audit rows failed", len(rows))
                for row in rows:
                    row.row_id = None  # its transaction was rolled back
        for row in rows:
            row.written.set()


def _run_quietly(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("an audit callback failed")
