"""The record of system calls: a counter per app, call and outcome, and one audit row per call.

A call that is over when it returns is written at once; a generation (`generate`, `chat`) writes a
row when it is admitted (outcome `started`) and one when its process ends, with its tokens and
outcome, naming the start row (`opens`): a server killed mid-generation leaves "started, never
ended". Rows are written before the process's final event goes out, so a client that has seen its
answer end can already find the record of it. An error that is written here is marked (`audited`),
so the interfaces' error mappers, which audit every error that ends a request, write it once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmasos.errors import AuthenticationError, LLMasOSError, PermissionDeniedError, QuotaExceededError
from llmasos.kernel.kernel import Kernel
from llmasos.kernel.process import Process, ProcessState
from llmasos.security.apps import App
from llmasos.security.audit import AuditLog, AuditRecord, QueuedRow
from llmasos.security.data_keys import AUDIT_PURPOSE, data_keys

logger = logging.getLogger(__name__)

#: Seconds admission waits for a generation's start row to be written (milliseconds normally; a disk
#: that stalls longer than this is logged, and the generation goes on).
START_ROW_WAIT_SECONDS = 30.0

#: Errors that mean "not allowed" (audited as denied) rather than "not valid".
DENIALS = (PermissionDeniedError, QuotaExceededError, AuthenticationError)


@dataclass
class _Started:
    """A generation waiting for its process to end."""

    call: str
    started: float
    prompt: str | None
    row: QueuedRow | None  # its start row in the audit log (queued; written by the audit's writer)


class CallTrail:
    def __init__(self, kernel: Kernel, audit: AuditLog | None, interface: str) -> None:
        self.kernel = kernel
        self.audit = audit
        self.interface = interface  # written into audit rows: http, sdk, cli
        self._started: dict[int, _Started] = {}

    def record(
        self,
        app: str,
        call: str,
        target: str = "",
        error: LLMasOSError | None = None,
        *,
        queued: bool = False,
        **extra: Any,
    ) -> None:
        """Count the call and write its audit row (when there is an audit log). `error` makes it
        denied (not allowed) or an error (allowed but invalid). `queued`: hand the row to the audit
        log's writer thread (written soon, batched with others) instead of writing it now."""
        if error is None:
            outcome, allowed, reason = extra.pop("outcome", "ok"), True, ""
        else:
            denied = isinstance(error, DENIALS)
            outcome, allowed, reason = ("denied" if denied else "error"), not denied, str(error)
            error.audited = True
        self.kernel.counters.call(app, call, outcome, error.type if error is not None else None)
        if self.audit is None:
            return
        row = AuditRecord(
            app=app,
            call=call,
            target=target,
            outcome=outcome,
            allowed=allowed,
            reason=reason,
            interface=self.interface,
            **extra,
        )
        if queued:
            self.audit.submit(row)
        else:
            self.audit.record(row)

    @contextlib.contextmanager
    def audited(self, app: App, call: str, target: str = "", *, queued: bool = False) -> Iterator[None]:
        """Record the enclosed call: ok when it returns, denied or error when it raises (`queued`:
        see `record`)."""
        started = time.monotonic()
        try:
            yield
        except LLMasOSError as err:
            self.record(app.name, call, target, err, queued=queued, duration_s=time.monotonic() - started)
            raise
        self.record(app.name, call, target, queued=queued, duration_s=time.monotonic() - started)

    def begin(self, process: Process, call: str, started: float, prompt: str | None) -> QueuedRow | None:
        """A generation is being admitted: its start row queued now (the caller holds the kernel's
        lock: no disk write here; `wait_started` waits for it), its end row when its process ends."""
        row = None
        if self.audit is not None:
            row = self.audit.submit(
                AuditRecord(
                    app=process.app,
                    call=call,
                    target=process.model,
                    outcome="started",
                    pid=process.pid,
                    tokens_in=process.tokens_in,
                    interface=self.interface,
                )
            )
        self._started[process.pid] = _Started(call, started, prompt, row)
        return row

    def wait_started(self, row: QueuedRow | None, timeout: float = START_ROW_WAIT_SECONDS) -> None:
        """Wait until a generation's start row is durable (outside the kernel's lock), so a server
        killed after admitting it leaves "started, never ended"."""
        if row is not None and row.wait(timeout) is None:
            logger.warning("the start row of a generation was not written within %.0f s", timeout)

    def ended(self, process: Process, work: Any) -> None:
        """The kernel's on_finish observer (under the kernel's lock): count the generation and queue
        its end row; the kernel sends the final event once it is written (`Kernel.defer_final`)."""
        started = self._started.pop(process.pid, None)
        if started is None:
            return
        self.kernel.counters.call(process.app, started.call, process.state.value)
        if self.audit is None:
            return
        finished = process.state is ProcessState.FINISHED
        self.audit.submit(
            AuditRecord(
                app=process.app,
                call=started.call,
                target=f"{process.model}@{process.node}" if process.node else process.model,
                outcome=process.state.value,
                reason="" if finished else (process.reason or str(work.error or "")),
                pid=process.pid,
                tokens_in=process.tokens_in,
                tokens_out=process.tokens_out,
                duration_s=time.monotonic() - started.started,
                interface=self.interface,
                prompt=_sealed(process.app_id, started.prompt),
                output=_sealed(process.app_id, "".join(work.text) if work.keep_text else None),
            ),
            opens=started.row,
        )


def _sealed(owner: str, text: str | None) -> str | None:
    """Audited content sealed under its app's data key: the hash chain covers the sealed text, so the
    log still verifies after the app is deleted and its key destroyed, and its content is unreadable."""
    if text is None or not owner:
        return text
    return data_keys().seal_text(owner, text, AUDIT_PURPOSE)
