"""The durable runner: submits, resumes, cancels, approves and waits for runs (driving is driver.py).

Every run's state is in the store; this object holds only which runs this process drives now. On
a server's start `resume_unfinished` drives again every run a previous process left unfinished; on
its stop `close` stops driving without marking any run, so the next start resumes them.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmasos.errors import AppNotFoundError, WorkflowStateError
from llmasos.programs import ProgramRegistry
from llmasos.security.apps import App
from llmasos.workflows.driver import (
    MAX_STEP_THREADS,
    POLL_SECONDS,
    LiveRun,
    RunDriver,
    check_output,
    checked_inputs,
)
from llmasos.workflows.spec import Workflow
from llmasos.workflows.store import WHOLE, RunStore
from llmasos.workflows.validation import validate

__all__ = ["LiveRun", "WorkflowRunner", "checked_inputs"]


class WorkflowRunner(RunDriver):
    """Submits, drives, resumes, cancels and approves runs over one store and one set of syscalls."""

    def __init__(self, syscalls: Any, store: RunStore, registry: ProgramRegistry) -> None:
        self.syscalls, self.store, self.registry = syscalls, store, registry
        self._pool = ThreadPoolExecutor(MAX_STEP_THREADS, thread_name_prefix="workflow-step")
        self._live: dict[str, LiveRun] = {}
        self._lock = threading.Lock()
        self._stopping = False

    # ---- submission ---------------------------------------------------------------------------

    def validate(self, app: App, workflow: Workflow) -> None:
        validate(workflow, self.registry, app, lambda name: self.store.definition(app, name))

    def define(self, app: App, workflow: Workflow) -> None:
        self.validate(app, workflow)
        self.store.define(app, workflow)

    def submit(self, app: App, workflow: Workflow, inputs: dict | None = None) -> str:
        """Validate `workflow` and its `inputs`, commit a new run, and start driving it; its id."""
        self.validate(app, workflow)
        inputs = checked_inputs(workflow, inputs or {})
        run_id = self.store.create_run(app, workflow, inputs)
        self._drive_in_background(LiveRun(run_id, app, workflow, inputs))
        return run_id

    def resume_unfinished(self) -> list[str]:
        """At start: drive again every run a previous server left unfinished; their ids."""
        resumed = []
        for row in self.store.unfinished():
            try:
                app = self.syscalls.apps.get(row["app"])
                if app.identity != row["app_id"]:
                    raise AppNotFoundError(f"app {row['app']!r} was removed")
            except AppNotFoundError as err:
                self.store.set_status(row["id"], "failed", error=f"{err}; the run cannot go on without it")
                continue
            run = self.store.run(row["id"])
            self._drive_in_background(LiveRun(run["id"], app, self.store.spec_of(run), run["inputs"]))
            resumed.append(run["id"])
        return resumed

    # ---- control ------------------------------------------------------------------------------

    def cancel(self, app: App, run_id: str) -> dict:
        run = self.store.run(run_id, app)
        if run["status"] in ("succeeded", "failed", "cancelled"):
            raise WorkflowStateError(f"run {run_id} has already {run['status']}; nothing to cancel")
        live = self._live.get(run_id)
        if live is not None:
            live.cancellation.set()
            live.wake.set()
            live.done.wait(10)
        if self.store.run(run_id)["status"] != "cancelled":
            self.store.set_status(run_id, "cancelled", error="cancelled")
        return self.store.run(run_id)

    def approve(self, app: App, run_id: str, step_id: str, data: Any = None) -> dict:
        """End a `wait` step with `data` as its output; the run goes on."""
        run = self.store.run(run_id, app)
        workflow = self.store.spec_of(run)
        step = workflow.steps.get(step_id)
        if step is None or step.kind != "wait":
            waits = [s for s, v in workflow.steps.items() if v.kind == "wait"]
            raise WorkflowStateError(f"run {run_id} has no wait step {step_id!r}; its wait steps: {waits}")
        if (step_id, WHOLE) in self.store.results(run_id):
            raise WorkflowStateError(f"step {step_id} of run {run_id} has already ended")
        if step.output_schema is not None:
            check_output(step, step_id, data)
        self.store.commit(run_id, step_id, WHOLE, "succeeded", output=data, attempts=1)
        if run["status"] == "waiting":
            self.store.set_status(run_id, "running")  # so that a wait() from now sees it move on
        live = self._live.get(run_id)
        if live is not None:
            live.wake.set()
        return self.store.run(run_id)

    def resume(self, app: App, run_id: str) -> dict:
        """Run a failed or cancelled run again: its failed steps re-run, its committed results stay."""
        run = self.store.run(run_id, app)
        if run["status"] not in ("failed", "cancelled"):
            raise WorkflowStateError(
                f"run {run_id} is {run['status']}; only a failed or cancelled run resumes"
            )
        self.store.reopen(run_id)
        self._drive_in_background(LiveRun(run_id, app, self.store.spec_of(run), run["inputs"]))
        return self.store.run(run_id)

    def wait(self, run_id: str, timeout: float | None = None) -> dict:
        """The run's record once it has ended or waits for an approval (or when `timeout` passes).
        Woken by the store's commits; POLL_SECONDS is only how long it sleeps when nothing commits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = self.store.changes.version  # before the read: a commit after it ends the wait
            run = self.store.run(run_id)
            if run["status"] in ("succeeded", "failed", "cancelled", "waiting"):
                return run
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return run
            self.store.changes.wait(seen, POLL_SECONDS if remaining is None else min(POLL_SECONDS, remaining))

    def close(self) -> None:
        """The server stops: stop driving without marking any run, so the next start resumes them."""
        self._stopping = True
        with self._lock:
            live = list(self._live.values())
        for run in live:
            run.cancellation.set()
            run.wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
