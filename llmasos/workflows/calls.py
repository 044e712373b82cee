"""The workflow calls an interface makes for an app, answering JSON-ready dicts: what the HTTP routes,
the in-process SDK and the CLI share, so each of them stays a thin layer that parses and renders."""

from __future__ import annotations

import time
from typing import Any

from llmasos.errors import WorkflowNotFoundError, WorkflowValidationError
from llmasos.security.apps import App
from llmasos.workflows.executor import WorkflowRunner
from llmasos.workflows.graph import render_graph
from llmasos.workflows.spec import Workflow, loads, parse
from llmasos.workflows.store import WHOLE


class WorkflowCalls:
    """define / validate / start / list / show / cancel / approve / resume / events / graph."""

    def __init__(self, runner: WorkflowRunner) -> None:
        self.runner = runner
        self.store = runner.store

    def spec(self, data: Any) -> Workflow:
        """A Workflow from a mapping or from YAML/JSON text."""
        return loads(data) if isinstance(data, str) else parse(data)

    def validate(self, app: App, data: Any) -> dict:
        workflow = self.spec(data)
        self.runner.validate(app, workflow)
        return {"valid": True, "name": workflow.name, "steps": list(workflow.steps)}

    def define(self, app: App, data: Any) -> dict:
        workflow = self.spec(data)
        self.runner.define(app, workflow)
        return {"name": workflow.name, "steps": list(workflow.steps), "defined": True}

    def definitions(self, app: App) -> list[dict]:
        return [
            {"name": w.name, "description": w.description, "version": w.version, "steps": list(w.steps)}
            for w in self.store.definitions(app)
        ]

    def start(
        self, app: App, *, spec: Any = None, workflow: str | None = None, inputs: dict | None = None
    ) -> dict:
        """Run a spec given whole, or a workflow the app defined, by name; the new run's record."""
        if (spec is None) == (workflow is None):
            raise WorkflowValidationError("give either a workflow's spec or the name of a defined workflow")
        if spec is not None:
            chosen = self.spec(spec)
        else:
            chosen = self.store.definition(app, workflow)
            if chosen is None:
                raise WorkflowNotFoundError(f"no workflow named {workflow!r} is defined; define it first")
        run_id = self.runner.submit(app, chosen, inputs or {})
        return self.show(app, run_id)

    def wait(self, app: App, run_id: str, timeout: float | None = None) -> dict:
        self.store.run(run_id, app)
        self.runner.wait(run_id, timeout)
        return self.show(app, run_id)

    def runs(self, app: App, *, status: str | None = None, limit: int = 100) -> list[dict]:
        return self.store.runs(app, status=status, limit=limit)

    def show(self, app: App, run_id: str) -> dict:
        """The run with each step's status, attempts, timings, output and error."""
        run = self.store.run(run_id, app)
        workflow = self.store.spec_of(run)
        results = self.store.results(run_id)
        open_attempts = {
            (a["step"], a["item"]) for a in self.store.attempt_rows(run_id) if a["ended_at"] is None
        }
        attempts: dict[str, int] = {}
        for row in self.store.attempt_rows(run_id):
            attempts[row["step"]] = max(attempts.get(row["step"], 0), row["attempt"])
        steps = []
        for step_id, step in workflow.steps.items():
            record = results.get((step_id, WHOLE))
            items = sorted(i for (s, i) in results if s == step_id and i != WHOLE)
            if record is not None:
                entry = record.to_dict()
            else:
                running = any(s == step_id for s, _ in open_attempts)
                status = "waiting" if step.kind == "wait" and run["status"] == "waiting" else None
                entry = {"step": step_id, "status": status or ("running" if running else "pending")}
                entry["attempts"] = attempts.get(step_id, 0)
            entry.update(kind=step.kind, name=step.name, needs=step.needs)
            if step.for_each is not None:
                entry["items_done"] = len(items)
            steps.append(entry)
        fields = ("id", "app", "workflow", "status", "error", "output", "inputs", "parent")
        times = ("created_at", "updated_at", "finished_at")
        return {**{k: run[k] for k in fields}, **{k: run[k] for k in times}, "steps": steps}

    # A run's cancellation, approval and resumption change what runs: each is an audit row, like
    # a process's cancellation (its steps' own calls are audited as they run).

    def cancel(self, app: App, run_id: str) -> dict:
        with self.runner.syscalls.audited(app, "workflows.cancel", run_id):
            self.runner.cancel(app, run_id)
        return self.show(app, run_id)

    def approve(self, app: App, run_id: str, step: str, data: Any = None) -> dict:
        with self.runner.syscalls.audited(app, "workflows.approve", f"{run_id}/{step}"):
            self.runner.approve(app, run_id, step, data)
        return self.show(app, run_id)

    def resume(self, app: App, run_id: str) -> dict:
        with self.runner.syscalls.audited(app, "workflows.resume", run_id):
            self.runner.resume(app, run_id)
        return self.show(app, run_id)

    def events(self, app: App, run_id: str, after: int = 0) -> list[dict]:
        self.store.run(run_id, app)
        return self.store.events(run_id, after)

    def follow(self, app: App, run_id: str, *, timeout: float | None = None, wait_s: float = 15.0):
        """Each event of the run as it is committed, until the run ends (or waits for an approval).
        Woken by the store's commits; `wait_s` is only how long it sleeps when nothing commits."""
        after, deadline = 0, None if timeout is None else time.monotonic() + timeout
        changes = self.store.changes
        while True:
            seen = changes.version  # read before the store: a commit after it ends the wait below
            status = self.store.run(run_id)["status"]  # before the events: the ending one is among them
            events = self.events(app, run_id, after)
            yield from events
            after = events[-1]["id"] if events else after
            if events:
                continue
            if status in ("succeeded", "failed", "cancelled", "waiting"):
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            changes.wait(seen, wait_s if remaining is None else min(wait_s, remaining))

    def graph(
        self, app: App, *, run_id: str | None = None, workflow: str | None = None, fmt: str = "svg"
    ) -> bytes:
        """The graph of a run (coloured by its steps' states) or of a defined workflow, as SVG, PNG or DOT."""
        if run_id is not None:
            shown = self.show(app, run_id)
            return render_graph(self.store.spec_of(self.store.run(run_id)), shown["steps"], fmt)
        chosen = self.store.definition(app, workflow or "")
        if chosen is None:
            raise WorkflowNotFoundError(f"no workflow named {workflow!r} is defined; define it first")
        return render_graph(chosen, None, fmt)
