"""One attempt of one step: its templates rendered, then its program run through the system calls.

Every kind runs as the run's app: services, tools and functions through the program registry's
`run` (the kernel's `invoke` system call checks the capability and writes the audit row), chat
steps through the `chat` service (so the model call is one of the app's processes, under its
priority and quotas), sub-workflows through the runner, which gives them runs of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmasos.errors import LLMasOSError
from llmasos.programs import Cancellation, ProgramRegistry
from llmasos.security.apps import App
from llmasos.workflows import templates
from llmasos.workflows.spec import Step
from llmasos.workflows.store import WHOLE, StepRecord
from llmasos.workflows.validation import program_kind

DEFAULT_MODEL = "default"
#: Runs a sub-workflow for a step and returns its output: (step's run id suffix, workflow name, inputs).
ChildRunner = Callable[[str, str, dict, Cancellation], Any]


@dataclass(frozen=True)
class StepCall:
    """What one attempt needs: who runs it, its spec, its data, its key and how to stop it."""

    app: App
    run_id: str
    step_id: str
    step: Step
    item: int
    context: dict
    idempotency_key: str
    cancellation: Cancellation

    @property
    def label(self) -> str:
        return self.step_id if self.item == WHOLE else f"{self.step_id}[{self.item}]"


def context_of(inputs: dict, results: dict[tuple[str, int], StepRecord]) -> dict:
    """The data templates read: `inputs` and, per step with a committed result, its fields."""
    steps = {}
    for (step_id, item), record in results.items():
        if item == WHOLE:
            steps[step_id] = {
                "output": record.output,
                "error": record.error,
                "status": record.status,
                "attempts": record.attempts,
            }
    return {"inputs": inputs, "steps": steps}


def with_item(context: dict, item: Any, index: int) -> dict:
    return {**context, "item": item, "index": index}


def execute(call: StepCall, syscalls: Any, registry: ProgramRegistry, run_child: ChildRunner) -> Any:
    """The output of one attempt of `call`; raises what the program raised."""
    step, context = call.step, call.context
    if step.kind == "workflow":
        suffix = call.step_id if call.item == WHOLE else f"{call.step_id}.{call.item}"
        return run_child(suffix, step.name, templates.render(step.input or {}, context), call.cancellation)
    if step.kind == "chat":
        name, data = "chat", templates.render(step.prompt, context)
        params = templates.render(step.params, context)
        if step.system is not None:
            params["system"] = templates.render(step.system, context)
        if step.max_tokens is not None:
            params["max_tokens"] = step.max_tokens
        if not isinstance(data, str) or not data.strip():
            raise LLMasOSError(f"step {call.label}: its prompt rendered to {data!r}, not text")
    else:
        name, data = step.name, templates.render(step.input, context)
        params = templates.render(step.params, context)
    result = registry.run(
        syscalls,
        call.app,
        name,
        data,
        params or None,
        model=step.model or DEFAULT_MODEL,
        kind=program_kind(step),
        cancellation=call.cancellation,
        idempotency_key=call.idempotency_key,
    )
    return result.output
