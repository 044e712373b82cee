"""`client.workflows`: define, validate and run workflows, and follow, approve, cancel or resume runs.

Over HTTP each method is one `/os/workflows` request; in-process (no server running) the same calls
run on a runner inside this process — which is durable only while it lives, so a run that must
survive a crash is given to a server (`llmasos serve`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmasos.workflows.builder import WorkflowBuilder
from llmasos.workflows.spec import Workflow


def _spec(spec: Any) -> Any:
    """A spec as the wire carries it: a mapping, or YAML/JSON text (a path is read)."""
    if isinstance(spec, WorkflowBuilder):
        return spec.to_dict()
    if isinstance(spec, Workflow):
        return spec.model_dump(mode="json", exclude_unset=True)
    if isinstance(spec, Path):
        return spec.read_text()
    return spec


class Workflows:
    """The workflow calls of one client (see the module's docstring)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._local = None
        self._lock = threading.Lock()

    @property
    def _is_http(self) -> bool:
        return self._transport.mode == "http"

    def _calls(self):
        """(WorkflowCalls, app) of the in-process kernel, made on first use."""
        with self._lock:
            if self._local is None:
                from llmasos.programs import default_registry
                from llmasos.workflows import RunStore, WorkflowRunner
                from llmasos.workflows.calls import WorkflowCalls

                syscalls, app = self._transport.system_calls()
                runner = WorkflowRunner(syscalls, RunStore(), default_registry())
                self._local = (WorkflowCalls(runner), app)
            return self._local

    def _http(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._transport.request(method, path, **kwargs)

    def validate(self, spec: Any) -> dict:
        if self._is_http:
            return self._http("POST", "/os/workflows/validate", json={"spec": _spec(spec)})
        calls, app = self._calls()
        return calls.validate(app, _spec(spec))

    def define(self, spec: Any) -> dict:
        if self._is_http:
            return self._http("POST", "/os/workflows", json={"spec": _spec(spec)})
        calls, app = self._calls()
        return calls.define(app, _spec(spec))

    def list(self) -> list[dict]:
        if self._is_http:
            return self._http("GET", "/os/workflows")["workflows"]
        calls, app = self._calls()
        return calls.definitions(app)

    def run(
        self,
        spec: Any = None,
        *,
        workflow: str | None = None,
        inputs: dict | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> dict:
        """Start a run of `spec` (or of the defined `workflow`); with `wait`, its record once it ended."""
        if self._is_http:
            body = {"spec": _spec(spec), "workflow": workflow, "inputs": inputs or {}, "wait": wait}
            if timeout is not None:
                body["timeout_s"] = timeout
            # a waited-for run takes as long as it takes: no read timeout then, beyond the run's own
            read_timeout = None if wait and timeout is None else (timeout or 0) + 60
            return self._http("POST", "/os/workflows/runs", json=body, timeout=read_timeout)
        calls, app = self._calls()
        run = calls.start(app, spec=_spec(spec), workflow=workflow, inputs=inputs)
        return calls.wait(app, run["id"], timeout) if wait else run

    def runs(self, status: str | None = None) -> list[dict]:
        if self._is_http:
            return self._http("GET", "/os/workflows/runs", params={"status": status} if status else {})[
                "runs"
            ]
        calls, app = self._calls()
        return calls.runs(app, status=status)

    def get(self, run_id: str) -> dict:
        if self._is_http:
            return self._http("GET", f"/os/workflows/runs/{run_id}")
        calls, app = self._calls()
        return calls.show(app, run_id)

    def cancel(self, run_id: str) -> dict:
        if self._is_http:
            return self._http("DELETE", f"/os/workflows/runs/{run_id}")
        calls, app = self._calls()
        return calls.cancel(app, run_id)

    def approve(self, run_id: str, step: str, data: Any = None) -> dict:
        if self._is_http:
            return self._http(
                "POST", f"/os/workflows/runs/{run_id}/approve", json={"step": step, "data": data}
            )
        calls, app = self._calls()
        return calls.approve(app, run_id, step, data)

    def resume(self, run_id: str) -> dict:
        if self._is_http:
            return self._http("POST", f"/os/workflows/runs/{run_id}/resume")
        calls, app = self._calls()
        return calls.resume(app, run_id)

    def events(self, run_id: str) -> Iterator[dict]:
        """The run's events as they happen, until it ends or waits for an approval."""
        if not self._is_http:
            calls, app = self._calls()
            yield from calls.follow(app, run_id)
            return
        for line in self._transport.stream_lines("GET", f"/os/workflows/runs/{run_id}/events"):
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[len("data: ") :])

    def graph(self, run_id: str | None = None, *, workflow: str | None = None, format: str = "svg") -> bytes:
        """The picture of a run (coloured by state) or of a defined workflow: svg, png or dot."""
        if self._is_http:
            path = f"/os/workflows/runs/{run_id}/graph" if run_id else f"/os/workflows/{workflow}/graph"
            return self._transport.request_bytes("GET", path, params={"format": format})
        calls, app = self._calls()
        return calls.graph(app, run_id=run_id, workflow=workflow, fmt=format)
