"""A workflow as data: pydantic models of the spec, its published JSON Schema, and loading from YAML/JSON.

A workflow is a named mapping of steps. Each step is one of six kinds:

- `service`, `tool`: a program of the registry by `name`, given `input` (and `params`);
- `chat`: one model call with a `prompt` template (and an optional `system` prompt);
- `function`: Python code registered through the plugin door (`llmasos.workflows.functions`);
- `workflow`: another workflow the app has defined, by `name`, given `input` as its inputs;
- `wait`: nothing runs; the step ends when someone approves it (its output is what they send).

Values in `input`, `params`, `prompt`, `when` and `for_each.items` are jinja2 templates, rendered in a
sandbox over `inputs`, `steps.<id>.output` (and `item`, `index` inside a `for_each`). A string that is
exactly one `{{ expression }}` becomes the expression's value (a list stays a list); any other string
renders to text. The structure here is checked by pydantic; the references, kinds and types by
`validation.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmasos.errors import WorkflowValidationError

STEP_KINDS = ("service", "tool", "chat", "function", "workflow", "wait")
StepKind = Literal["service", "tool", "chat", "function", "workflow", "wait"]
#: Step ids and workflow names: short identifiers, so they read as template names (`steps.fetch`).
STEP_ID = r"^[a-z][a-z0-9_]{0,63}$"
WORKFLOW_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
#: Bounds of one for_each, whatever the app's limits: a spec cannot ask a server for more.
MAX_FOR_EACH_ITEMS = 1000
MAX_FOR_EACH_CONCURRENCY = 64
#: Containers nested deeper than this in a spec are refused (no workflow needs them; recursion does).
MAX_NESTING = 32
MAX_NODES = 100_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Retry(Strict):
    """How often a failing step is tried, and how long to wait between tries."""

    max_attempts: int = Field(1, ge=1, le=20, description="tries in all, the first included")
    backoff_s: float = Field(0.5, ge=0, le=600, description="wait before the second try")
    backoff_factor: float = Field(2.0, ge=1, le=10, description="each later wait is this times longer")

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after `failed_attempts` failures (1 after the first)."""
        return self.backoff_s * self.backoff_factor ** max(0, failed_attempts - 1)


class ForEach(Strict):
    """Run the step once per item of a list, at most `concurrency` at once."""

    items: Any = Field(description="a list, or a template that renders to one")
    concurrency: int = Field(4, ge=1, le=MAX_FOR_EACH_CONCURRENCY)
    max_items: int = Field(100, ge=1, le=MAX_FOR_EACH_ITEMS, description="more items fail the step")


class Step(Strict):
    """One node of the graph."""

    kind: StepKind
    name: str | None = Field(None, description="service, tool, function or workflow: which one")
    input: Any = Field(None, description="the program's input (templates allowed anywhere inside)")
    params: dict[str, Any] = Field(default_factory=dict, description="service/tool params")
    prompt: str | None = Field(None, description="chat: the user message (a template)")
    system: str | None = Field(None, description="chat: a system prompt (a template)")
    model: str | None = Field(None, description="the model of service and chat steps (default: 'default')")
    max_tokens: int | None = Field(None, ge=1, le=32768, description="chat: the reply's token limit")
    needs: list[str] = Field(default_factory=list, description="steps whose results this one waits for")
    when: str | None = Field(None, description="a template expression; false skips the step")
    for_each: ForEach | None = None
    retry: Retry = Field(default_factory=Retry)
    timeout_s: float | None = Field(None, gt=0, le=86400, description="one attempt's limit")
    on_error: str = Field(
        "fail",
        description="past its retries: 'fail' the run, 'continue' (output null), or the id of a step "
        "to run instead (it runs only when this one fails)",
    )
    output_schema: dict | None = Field(
        None, description="chat/workflow/wait: the output's JSON Schema (checked when the step ends)"
    )


class Workflow(Strict):
    """A workflow: its inputs (JSON Schema of each), its steps, and the output made from them."""

    name: str = Field(pattern=WORKFLOW_NAME)
    description: str = ""
    version: str = "1"
    inputs: dict[str, dict] = Field(default_factory=dict, description="input name -> its JSON Schema")
    steps: dict[str, Step] = Field(min_length=1)
    output: Any = Field(None, description="the run's output: templates over inputs and steps")

    @field_validator("steps")
    @classmethod
    def _step_ids(cls, steps: dict[str, Step]) -> dict[str, Step]:
        for step_id in steps:
            if not re.match(STEP_ID, step_id):
                raise ValueError(
                    f"step id {step_id!r} is not valid: use a lowercase letter, then letters, digits or '_' "
                    "(up to 64), so that templates can name it as steps.<id>"
                )
        return steps


def json_schema() -> dict:
    """The published JSON Schema of a workflow spec (`docs/workflow.schema.json`)."""
    schema = Workflow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://llmasos.dev/workflow.schema.json"
    return schema


def parse(data: Any) -> Workflow:
    """A Workflow from a mapping; WorkflowValidationError naming the first bad field's path."""
    if isinstance(data, Workflow):
        return data
    if not isinstance(data, dict):
        raise WorkflowValidationError(
            f"a workflow is a mapping (name, steps, ...), got {type(data).__name__}"
        )
    _refuse_deep(data)
    try:
        return Workflow.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        path = ".".join(str(part) for part in first["loc"])
        raise WorkflowValidationError(_message(first), path) from None


def _refuse_deep(data: Any) -> None:
    """WorkflowValidationError if containers nest deeper than MAX_NESTING or hold more than MAX_NODES
    values in all (walked without recursion)."""
    pending, seen = [(data, 1)], 0
    while pending:
        value, depth = pending.pop()
        seen += 1
        if seen > MAX_NODES:  # YAML aliases can make a short text a huge tree (a "billion laughs")
            raise WorkflowValidationError(f"the spec has more than {MAX_NODES} values; split it")
        if depth > MAX_NESTING:
            raise WorkflowValidationError(f"the spec nests deeper than {MAX_NESTING} levels; flatten it")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, depth + 1) for child in children)


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "is not a field of a workflow or step; check its spelling against docs/workflow.schema.json"
    if error["type"] == "literal_error" and error["loc"][-1] == "kind":
        return f"unknown step kind {error['input']!r}; use one of {', '.join(STEP_KINDS)}"
    return error["msg"]


def loads(text: str, source: str = "the workflow") -> Workflow:
    """Parse YAML (JSON is YAML too) into a Workflow."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise WorkflowValidationError(f"{source} is not valid YAML or JSON: {err}") from None
    return parse(data)


def load(path: str | Path) -> Workflow:
    """A Workflow from a .yaml, .yml or .json file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise WorkflowValidationError(f"cannot read {path}: {err.strerror}; check the path") from None
    return loads(text, str(path))


def dumps(workflow: Workflow) -> str:
    """The spec as JSON, without the defaults it did not set (what is stored with a run)."""
    return json.dumps(workflow.model_dump(mode="json", exclude_unset=True))
