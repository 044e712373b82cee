"""Driving runs: each run's driver loops over its ready steps, one attempt of a step at a time.

A run's driver loops: read the committed results, start every step whose needs all have one, wait
for any to end. A step's result is committed (store.commit returns after the transaction) before
the driver reads it, so nothing that needs a step starts before its result is durable. After a crash
the driver of each unfinished run starts again from the committed results alone: steps with a
result are never run again; a step that was running gets its interrupted attempt again, under the
same attempt number and idempotency key.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import jsonschema

from llmasos.errors import (
    CallCancelledError,
    LLMasOSError,
    WorkflowNotFoundError,
    WorkflowValidationError,
)
from llmasos.programs import Cancellation, ProgramRegistry
from llmasos.programs.schemas import field_path, first_error
from llmasos.security.apps import App
from llmasos.workflows import steps, templates
from llmasos.workflows.fan_out import run_for_each
from llmasos.workflows.spec import Step, Workflow
from llmasos.workflows.store import WHOLE, RunStore, StepRecord
from llmasos.workflows.validation import MAX_DEPTH, handlers

log = logging.getLogger(__name__)

#: Step attempts running at once across all runs; each holds a thread, mostly waiting on the kernel.
MAX_STEP_THREADS = 64
#: Errors that another try cannot fix (a bad request, a missing capability or program).
NOT_RETRYABLE_STATUSES = (400, 403, 404, 413, 422)
#: How often a waiting driver looks again even if nothing woke it (a cancelled run, a lost wake-up).
POLL_SECONDS = 0.5


class LiveRun:
    """A run being driven in this process: its spec, its app, and what stops or wakes it."""

    def __init__(self, run_id: str, app: App, workflow: Workflow, inputs: dict) -> None:
        self.id, self.app, self.workflow, self.inputs = run_id, app, workflow, inputs
        self.cancellation = Cancellation()
        self.wake = threading.Event()
        self.done = threading.Event()


class RunDriver:
    """The driving half of `WorkflowRunner` (a mixin: the runner holds the store, pool and runs)."""

    syscalls: Any
    store: RunStore
    registry: ProgramRegistry
    _pool: ThreadPoolExecutor
    _live: dict[str, LiveRun]
    _lock: threading.Lock
    _stopping: bool

    # ---- driving ------------------------------------------------------------------------------

    def _drive_in_background(self, live: LiveRun) -> None:
        with self._lock:
            if live.id in self._live:
                return
            self._live[live.id] = live
        threading.Thread(
            target=self._drive_logged, args=(live,), name=f"workflow-{live.id}", daemon=True
        ).start()

    def _drive_logged(self, live: LiveRun) -> None:
        try:
            self._drive(live)
        except Exception as err:  # a bug of ours: the run fails with it rather than hang
            log.exception("workflow run %s", live.id)
            if not self._stopping:
                self.store.set_status(live.id, "failed", error=f"internal error: {type(err).__name__}: {err}")
        finally:
            with self._lock:
                self._live.pop(live.id, None)
            live.done.set()

    def _drive(self, live: LiveRun) -> None:
        """Start ready steps, wait for any, until every step has a result or the run fails."""
        status = "running"
        self.store.set_status(live.id, status)
        running: dict[str, Future] = {}
        waiting: set[str] = set()
        while not self._stopping:
            if live.cancellation.is_set:
                self._end_cancelled(live, running)
                return
            results = self.store.results(live.id)
            failure = _fatal_failure(live.workflow, results)
            if failure is not None:
                live.cancellation.set()
                wait(running.values())
                self.store.set_status(live.id, "failed", error=failure)
                return
            for step_id in self._ready(live.workflow, results, running, waiting):
                if live.workflow.steps[step_id].kind == "wait":
                    waiting.add(step_id)
                    self.store.event(live.id, "step_waiting", step_id)
                    continue
                running[step_id] = self._pool.submit(self._run_step, live, step_id, results)
            if not running:
                if not (waiting - {s for s, _ in results}):
                    self._finish(live, results)
                    return
                if status != "waiting":  # only wait steps are left: sleep until an approval
                    status = "waiting"
                    self.store.set_status(live.id, status)
                live.wake.wait(POLL_SECONDS)
                live.wake.clear()
                continue
            if status != "running":
                status = "running"
                self.store.set_status(live.id, status)
            done, _ = wait(running.values(), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for step_id in [s for s, f in running.items() if f in done]:
                running.pop(step_id).result()  # re-raises a bug of ours

    def _ready(self, workflow: Workflow, results: dict, running: dict, waiting: set[str]) -> list[str]:
        handled = handlers(workflow)
        ready = []
        for step_id, step in workflow.steps.items():
            if (step_id, WHOLE) in results or step_id in running or step_id in waiting:
                continue
            if all((need, WHOLE) in results for need in step.needs) and (
                step_id not in handled or (handled[step_id], WHOLE) in results
            ):
                ready.append(step_id)
        return ready

    def _end_cancelled(self, live: LiveRun, running: dict) -> None:
        wait(running.values())
        if not self._stopping:
            self.store.set_status(live.id, "cancelled", error="cancelled")

    def _finish(self, live: LiveRun, results: dict) -> None:
        try:
            output = templates.render(live.workflow.output, steps.context_of(live.inputs, results))
        except Exception as err:  # the output reads what a skipped or failed step never made
            self.store.set_status(live.id, "failed", error=f"the workflow's output could not be made: {err}")
            return
        self.store.set_status(live.id, "succeeded", output=output)

    # ---- one step -----------------------------------------------------------------------------

    def _run_step(self, live: LiveRun, step_id: str, results: dict) -> None:
        """Commit the step's result: skipped, or its output, or its failure past its retries."""
        step = live.workflow.steps[step_id]
        context = steps.context_of(live.inputs, results)
        skip = self._skip_reason(live.workflow, step_id, step, results, context)
        if skip is not None:
            self.store.commit(live.id, step_id, WHOLE, "skipped", error=skip)
            return
        if step.for_each is None:
            self.attempts(live, step_id, step, WHOLE, context)
            return
        run_for_each(self.attempts, self.store, live, step_id, step, context)

    def _skip_reason(
        self, workflow: Workflow, step_id: str, step: Step, results: dict, context: dict
    ) -> str | None:
        handled = handlers(workflow).get(step_id)
        if handled is not None and results[(handled, WHOLE)].status != "failed":
            return f"{handled} did not fail"
        skipped = [n for n in step.needs if results[(n, WHOLE)].status == "skipped"]
        if skipped:
            return f"needs {skipped[0]}, which was skipped"
        if step.when is not None:
            try:
                if not templates.evaluate(step.when, context):
                    return f"when: {step.when} is false"
            except Exception as err:
                return f"when: {step.when} could not be evaluated: {err}"
        return None

    def attempts(
        self, live: LiveRun, step_id: str, step: Step, item: int, context: dict
    ) -> StepRecord | None:
        """Try `step` (one item of it) until it succeeds or its retries run out; commit the end."""
        done = self.store.results(live.id).get((step_id, item))
        if done is not None:
            return done  # an item committed before a crash
        started = time.time()
        while not self._stopping:
            attempt = self.store.start_attempt(live.id, step_id, item)
            call = steps.StepCall(
                live.app,
                live.id,
                step_id,
                step,
                item,
                context,
                f"{live.id}:{step_id}:{item}:{attempt}",
                Cancellation(),
            )
            live.cancellation.on_cancel(call.cancellation.set)
            try:
                output = self._call_with_timeout(call)
                check_output(step, call.label, output)
            except Exception as err:
                if self._stopping:
                    return None  # the server stops: the attempt stays open and runs again on start
                message = _describe(err)
                self.store.fail_attempt(live.id, step_id, item, message)
                if live.cancellation.is_set or attempt >= step.retry.max_attempts or not _retryable(err):
                    return self.store.commit(
                        live.id, step_id, item, "failed", error=message, attempts=attempt, started_at=started
                    )
                live.wake.wait(step.retry.delay(attempt))
                continue
            return self.store.commit(
                live.id, step_id, item, "succeeded", output=output, attempts=attempt, started_at=started
            )
        return None

    def _call_with_timeout(self, call: steps.StepCall) -> Any:
        if call.step.timeout_s is None:
            return steps.execute(call, self.syscalls, self.registry, self._child_runner(call))
        result: dict[str, Any] = {}

        def attempt() -> None:
            try:
                result["output"] = steps.execute(call, self.syscalls, self.registry, self._child_runner(call))
            except BaseException as err:
                result["error"] = err

        thread = threading.Thread(target=attempt, name=f"workflow-call-{call.label}", daemon=True)
        thread.start()
        thread.join(call.step.timeout_s)
        if thread.is_alive():
            call.cancellation.set()  # its model calls stop on the kernel's next tick
            raise TimeoutError(f"step {call.label} ran past its timeout of {call.step.timeout_s:g} s")
        if "error" in result:
            raise result["error"]
        return result.get("output")

    def _child_runner(self, call: steps.StepCall) -> steps.ChildRunner:
        def run_child(suffix: str, name: str, inputs: dict, cancellation: Cancellation) -> Any:
            return self._run_child(call, suffix, name, inputs, cancellation)

        return run_child

    def _run_child(
        self, call: steps.StepCall, suffix: str, name: str, inputs: dict, cancellation: Cancellation
    ) -> Any:
        """A sub-workflow as a run of its own (id `PARENT.STEP`), driven on this thread; its output."""
        parent = self.store.run(call.run_id)
        if parent["depth"] + 1 > MAX_DEPTH:
            raise WorkflowValidationError(f"sub-workflows nest deeper than {MAX_DEPTH}; flatten them")
        workflow = self.store.definition(call.app, name)
        if workflow is None:
            raise WorkflowNotFoundError(f"no workflow named {name!r} is defined for app {call.app.name!r}")
        inputs = checked_inputs(workflow, inputs)
        child_id = self.store.create_run(
            call.app, workflow, inputs, parent=call.run_id, run_id=f"{call.run_id}.{suffix}"
        )
        child = LiveRun(child_id, call.app, workflow, inputs)
        cancellation.on_cancel(child.cancellation.set)
        if self.store.run(child_id)["status"] not in ("succeeded",):
            if self.store.run(child_id)["status"] in ("failed", "cancelled"):
                self.store.reopen(child_id)
            self._drive(child)
        run = self.store.run(child_id)
        if run["status"] != "succeeded":
            raise LLMasOSError(f"sub-workflow {name} (run {child_id}) {run['status']}: {run['error']}")
        return run["output"]


def checked_inputs(workflow: Workflow, inputs: dict) -> dict:
    """`inputs` with defaults filled in, each checked against its declared schema."""
    if not isinstance(inputs, dict):
        raise WorkflowValidationError(
            f"inputs are a mapping of name to value, got {type(inputs).__name__}", "inputs"
        )
    unknown = sorted(set(inputs) - set(workflow.inputs))
    if unknown:
        declared = ", ".join(workflow.inputs) or "none"
        raise WorkflowValidationError(
            f"{unknown[0]!r} is not an input of {workflow.name}; its inputs: {declared}", "inputs"
        )
    checked = {}
    for name, schema in workflow.inputs.items():
        if name not in inputs:
            if "default" not in schema:
                raise WorkflowValidationError(
                    f"input {name!r} is required ({schema.get('type', 'any')})", f"inputs.{name}"
                )
            checked[name] = schema["default"]
            continue
        error = first_error(jsonschema.Draft202012Validator(schema), inputs[name])
        if error is not None:
            raise WorkflowValidationError(error.message, field_path(error, f"inputs.{name}"))
        checked[name] = inputs[name]
    return checked


def check_output(step: Step, label: str, output: Any) -> None:
    if step.output_schema is None:
        return
    error = first_error(jsonschema.Draft202012Validator(step.output_schema), output)
    if error is not None:
        raise LLMasOSError(
            f"step {label}'s output is outside its output_schema: "
            f"{field_path(error, 'output')}: {error.message}"
        )


def _fatal_failure(workflow: Workflow, results: dict[tuple[str, int], StepRecord]) -> str | None:
    for (step_id, item), record in results.items():
        if item == WHOLE and record.status == "failed" and workflow.steps[step_id].on_error == "fail":
            return f"step {step_id} failed after {record.attempts} attempt(s): {record.error}"
    return None


def _retryable(err: BaseException) -> bool:
    if isinstance(err, CallCancelledError):
        return False
    return not (isinstance(err, LLMasOSError) and err.http_status in NOT_RETRYABLE_STATUSES)


def _describe(err: BaseException) -> str:
    if isinstance(err, LLMasOSError | TimeoutError):
        return str(err)
    return f"{type(err).__name__}: {err}"
