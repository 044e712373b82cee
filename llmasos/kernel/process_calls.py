"""The system calls over the process table: cancel, status, ps. An app sees and acts on its own
processes only (an admin on all); a process of another app is "not found", never "forbidden", so
its pid tells nothing. Mixed into `Syscalls`, as `AdminCalls` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmasos.errors import ProcessNotFoundError, ProcessStateError
from llmasos.kernel.process import Process, ProcessState
from llmasos.security.apps import App

if TYPE_CHECKING:
    from llmasos.kernel.call_trail import CallTrail
    from llmasos.kernel.kernel import Kernel


class ProcessCalls:
    """Mixed into `Syscalls`, which provides `kernel` and `trail`."""

    kernel: Kernel
    trail: CallTrail

    def cancel(
        self, app: App, pid: int, *, reason: str = "cancelled by its owner", wait: bool = True
    ) -> Process:
        """End `app`'s process `pid` now. `wait=False`: its audit row is queued for the audit log's
        writer instead of written before returning, for a caller that must not wait on the disk (an
        event loop). The server's own cancellations, for a client that left, are `abandon`."""
        with self.trail.audited(app, "cancel", str(pid), queued=not wait):
            process = self._visible(app, pid)
            if process.is_terminal:
                raise ProcessStateError(
                    f"process {pid} already ended ({process.state.value}); nothing to cancel"
                )
            self.kernel.cancel(process, reason)
        return process

    def abandon(self, app: App, pid: int, reason: str) -> None:
        """End `app`'s process `pid`, which the server started for a request that is over without it
        (its client left, or a sibling choice was refused). The server does this, not the app, so it
        is no call of the app's and gets no `cancel` row: the process's end row records it (outcome
        `cancelled`, `reason`). In a storm of dropped streams such a row was one more hand-off from
        the server's event loop to the audit writer per stream, a third of the rows (issue 20)."""
        process = self._visible(app, pid)
        if not process.is_terminal:
            self.kernel.cancel(process, reason)

    def status(self, app: App, pid: int) -> dict:
        with self.trail.audited(app, "status", str(pid)):
            return self.describe(self._visible(app, pid))

    def ps(self, app: App, *, include_finished: bool = True) -> list[dict]:
        """Every process the app may see (its own; all of them for an admin)."""
        with self.trail.audited(app, "ps"), self.kernel.lock:
            processes = [
                p
                for p in self.kernel.table.values()
                if (app.is_admin or p.app_id == app.identity) and (include_finished or not p.is_terminal)
            ]
        return [self.describe(p) for p in sorted(processes, key=lambda p: p.pid)]

    def describe(self, process: Process) -> dict:
        now = self.kernel.clock()
        info = {
            "pid": process.pid,
            "app": process.app,
            "model": process.model,
            "state": process.state.value,
            "priority": process.priority.label,
            "tokens_in": process.tokens_in,
            "tokens_out": process.tokens_out,
            "waited_seconds": round(process.waited_at(now), 3),
            "running_seconds": round(process.running_at(now), 3),
            "preemptions": process.num_preemptions,
            "reason": process.reason,
        }
        if process.node:
            info["node"] = process.node
        if process.state is ProcessState.QUEUED:
            info["estimated_wait_seconds"] = round(self.kernel.estimated_wait(process), 3)
        return info

    def _visible(self, app: App, pid: int) -> Process:
        process = self.kernel.table.get(pid)
        if process is None or not (app.is_admin or process.app_id == app.identity):
            raise ProcessNotFoundError(f"no process {pid} of app {app.name!r}; `llmasos ps` lists them")
        return process
