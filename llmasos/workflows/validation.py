"""Everything a workflow could get wrong, refused at submission with the path of the mistake.

The checks, in order: the graph (`needs` name real steps, no cycle — the cycle is named), each
step's kind and program (known to the registry, allowed to the app), the templates (parse, stay in
the sandbox, read only what exists: a declared input, a step this one needs, a field its output
schema has), the types (a literal or a referenced value against the program's input schema), and
the fan-out (within the spec's bounds and the app's concurrency).
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable
from typing import Any

import jsonschema

from llmasos.errors import InvalidRequestError, LLMasOSError, WorkflowValidationError, did_you_mean
from llmasos.programs.registry import ProgramRegistry
from llmasos.programs.schemas import compile_schema, field_path, first_error
from llmasos.security.apps import App
from llmasos.workflows import templates
from llmasos.workflows.spec import Step, Workflow
from llmasos.workflows.templates import Reference

STEP_FIELDS = ("output", "error", "status", "attempts")
#: Sub-workflows nest at most this deep (a workflow that reaches itself is refused outright).
MAX_DEPTH = 5
Lookup = Callable[[str], Workflow | None]


def validate(
    workflow: Workflow, registry: ProgramRegistry, app: App | None = None, lookup: Lookup | None = None
) -> None:
    """WorkflowValidationError (with `.path`) at the first thing wrong with `workflow`."""
    _check_schemas(workflow)
    ancestors = check_graph(workflow)
    lookup = lookup or (lambda name: None)
    schemas = {step_id: output_schema(step, registry, lookup) for step_id, step in workflow.steps.items()}
    for step_id, step in workflow.steps.items():
        path = f"steps.{step_id}"
        _check_program(step, path, registry, app, lookup, workflow.name)
        _check_fan_out(step, path, app)
        scope = Scope(workflow, schemas, ancestors[step_id])
        _check_templates(step, path, scope)
        _check_types(step, path, scope, registry, lookup)
    for path, _, references in templates.references_in(workflow.output, "output"):
        scope = Scope(workflow, schemas, set(workflow.steps))
        for reference in references:
            scope.schema_of(reference, path)


def _check_schemas(workflow: Workflow) -> None:
    """The inputs' and steps' declared schemas must be JSON Schema themselves."""
    declared = [(f"inputs.{name}", schema) for name, schema in workflow.inputs.items()]
    declared += [
        (f"steps.{i}.output_schema", s.output_schema) for i, s in workflow.steps.items() if s.output_schema
    ]
    for path, schema in declared:
        try:
            compile_schema(schema, path)
        except InvalidRequestError as err:
            raise WorkflowValidationError(err.message, path) from None


# ---- the graph ------------------------------------------------------------------------------------


def check_graph(workflow: Workflow) -> dict[str, set[str]]:
    """Each step's ancestors (what it transitively needs); refuses unknown needs and cycles."""
    steps = workflow.steps
    graph: dict[str, set[str]] = {}
    for step_id, step in steps.items():
        for index, need in enumerate(step.needs):
            if need not in steps:
                raise WorkflowValidationError(
                    f"needs {need!r}, which is not a step; {did_you_mean(need, steps)}"
                    f"the steps are: {', '.join(steps)}",
                    f"steps.{step_id}.needs[{index}]",
                )
        graph[step_id] = set(step.needs)
    for step_id, step in steps.items():
        if step.on_error not in ("fail", "continue"):
            handler = step.on_error
            if handler not in steps or handler == step_id:
                raise WorkflowValidationError(
                    f"{handler!r} is neither 'fail', 'continue' nor another step's id",
                    f"steps.{step_id}.on_error",
                )
            graph[handler].add(step_id)  # the handler runs after the step it handles
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        cycle = " -> ".join(err.args[1])
        raise WorkflowValidationError(
            f"the steps form a cycle: {cycle}; remove one of its needs", "steps"
        ) from None
    ancestors: dict[str, set[str]] = {}
    for step_id in order:
        ancestors[step_id] = set().union(*(ancestors[n] | {n} for n in graph[step_id]))
    return ancestors


def handlers(workflow: Workflow) -> dict[str, str]:
    """Error-handler step -> the step whose failure it handles."""
    return {s.on_error: i for i, s in workflow.steps.items() if s.on_error not in ("fail", "continue")}


# ---- programs -------------------------------------------------------------------------------------


def program_kind(step: Step) -> str | None:
    """The registry kind a step runs: service and chat steps services, tool and function steps tools."""
    return {"service": "service", "chat": "service", "tool": "tool", "function": "function"}.get(step.kind)


def _check_program(
    step: Step, path: str, registry: ProgramRegistry, app: App | None, lookup: Lookup, own: str
) -> None:
    needs_name = step.kind in ("service", "tool", "function", "workflow")
    if needs_name and not step.name:
        raise WorkflowValidationError(f"a {step.kind} step names its {step.kind}", f"{path}.name")
    if step.kind == "chat" and not step.prompt:
        raise WorkflowValidationError("a chat step has a prompt (a template)", f"{path}.prompt")
    if step.kind == "workflow":
        if step.name == own:
            raise WorkflowValidationError("a workflow may not run itself", f"{path}.name")
        if lookup(step.name) is None:
            raise WorkflowValidationError(
                f"no workflow named {step.name!r} is defined; define it first", f"{path}.name"
            )
        return
    kind = program_kind(step)
    if kind is None:
        return
    name = "chat" if step.kind == "chat" else step.name
    try:
        registry.get(name, kind)
    except LLMasOSError as err:
        if kind == "function":
            known = ", ".join(p.name for p in registry.list("function")) or "none"
            other = f"{name!r} is a tool, not a function; use kind: tool" if _is_tool(registry, name) else ""
            message = other or f"no function named {name!r}; {did_you_mean(name, known.split(', '))}"
            raise WorkflowValidationError(f"{message}; the functions are: {known}", f"{path}.name") from None
        raise WorkflowValidationError(err.message, f"{path}.name") from None
    if app is not None and not app.allows(kind, name):
        raise WorkflowValidationError(
            f"app {app.name!r} may not use {kind} {name!r}; an admin can grant {kind}:{name}", f"{path}.name"
        )


def _is_tool(registry: ProgramRegistry, name: str) -> bool:
    return any(p.name == name for p in registry.list("tool"))


def output_schema(step: Step, registry: ProgramRegistry, lookup: Lookup) -> dict:
    """The JSON Schema of what the step commits as its output ({} when anything may come)."""
    kind = program_kind(step)
    if step.output_schema is not None:
        one = step.output_schema
    elif step.kind == "chat":
        one = {"type": "string"}
    elif kind is not None and step.name:
        try:
            one = registry.get(step.name, kind).output_schema
        except LLMasOSError:
            one = {}  # reported by _check_program with its path
    else:
        one = {}
    return {"type": "array", "items": one} if step.for_each is not None else one


def _check_fan_out(step: Step, path: str, app: App | None) -> None:
    fan_out = step.for_each
    if fan_out is None:
        return
    if step.kind == "wait":
        raise WorkflowValidationError("a wait step cannot fan out", f"{path}.for_each")
    if app is not None and app.max_concurrent and fan_out.concurrency > app.max_concurrent:
        raise WorkflowValidationError(
            f"concurrency {fan_out.concurrency} is beyond app {app.name!r}'s limit of "
            f"{app.max_concurrent} concurrent processes; lower it",
            f"{path}.for_each.concurrency",
        )
    if isinstance(fan_out.items, list) and len(fan_out.items) > fan_out.max_items:
        raise WorkflowValidationError(
            f"{len(fan_out.items)} items are more than max_items ({fan_out.max_items})",
            f"{path}.for_each.items",
        )


# ---- templates ------------------------------------------------------------------------------------


class Scope:
    """What a template of one step may read: the workflow's inputs and the steps it needs."""

    def __init__(self, workflow: Workflow, schemas: dict[str, dict], visible: set[str]) -> None:
        self.workflow, self.schemas, self.visible = workflow, schemas, visible

    def schema_of(self, reference: Reference, path: str) -> dict:
        """The schema of the value `reference` reads; WorkflowValidationError if it cannot exist."""
        parts = list(reference.parts)
        if not parts:
            return {}
        if reference.root == "inputs":
            name = parts.pop(0)
            if name not in self.workflow.inputs:
                declared = ", ".join(self.workflow.inputs) or "none"
                raise WorkflowValidationError(
                    f"reads inputs.{name}, which is not declared; the inputs are: {declared}", path
                )
            return walk(self.workflow.inputs[name], parts, f"inputs.{name}", path)
        step_id = parts.pop(0)
        if step_id not in self.schemas:
            hint = did_you_mean(str(step_id), self.schemas)
            raise WorkflowValidationError(
                f"reads steps.{step_id}, which is not a step; {hint}".rstrip("; "), path
            )
        if step_id not in self.visible:
            raise WorkflowValidationError(
                f"reads steps.{step_id} without needing it (its result may not exist yet); "
                f"add {step_id!r} to this step's needs",
                path,
            )
        if not parts:
            return {}
        field = parts.pop(0)
        if field not in STEP_FIELDS:
            raise WorkflowValidationError(
                f"steps.{step_id}.{field} is not a field of a step; use one of {', '.join(STEP_FIELDS)}", path
            )
        if field != "output":
            return {}
        return walk(self.schemas[step_id], parts, f"steps.{step_id}.output", path)


def walk(schema: dict, parts: list[str | int], where: str, path: str) -> dict:
    """The sub-schema at `parts` inside `schema`; refuses a field the schema says cannot be there."""
    for part in parts:
        types = types_of(schema)
        if isinstance(part, int) or str(part).isdigit():
            if types is not None and "array" not in types:
                raise WorkflowValidationError(f"{where} is {'/'.join(sorted(types))}, not a list", path)
            schema = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        else:
            properties = schema.get("properties")
            if types is not None and "object" not in types:
                raise WorkflowValidationError(
                    f"{where} is {'/'.join(sorted(types))}, which has no field {part!r}", path
                )
            if isinstance(properties, dict) and part not in properties:
                raise WorkflowValidationError(
                    f"{where} has no field {part!r}; its fields are: {', '.join(properties) or 'none'}", path
                )
            schema = (properties or {}).get(part, {})
        where = f"{where}.{part}"
    return schema


def _check_templates(step: Step, path: str, scope: Scope) -> None:
    fields = {"input": step.input, "params": step.params, "prompt": step.prompt, "system": step.system}
    if step.for_each is not None:
        fields["for_each.items"] = step.for_each.items
    for field, value in fields.items():
        for where, text, references in templates.references_in(value, f"{path}.{field}"):
            _refuse_item_outside_for_each(step, field, text, where)
            for reference in references:
                scope.schema_of(reference, where)
    if step.when is not None:
        for reference in templates.check(step.when, f"{path}.when", expression=True):
            scope.schema_of(reference, f"{path}.when")


def _refuse_item_outside_for_each(step: Step, field: str, text: str, where: str) -> None:
    if step.for_each is not None and field != "for_each.items":
        return
    for name in ("item", "index"):
        if templates.reads_name(text, name):
            raise WorkflowValidationError(
                f"reads {name!r}, which exists only inside a for_each step's runs", where
            )


# ---- types ----------------------------------------------------------------------------------------


def types_of(schema: Any) -> set[str] | None:
    """The JSON types a schema allows, or None if it does not say."""
    if not isinstance(schema, dict):
        return None
    if "type" in schema:
        kinds = schema["type"]
        found = {kinds} if isinstance(kinds, str) else set(kinds)
        return found | {"number"} if "integer" in found else found
    for key in ("anyOf", "oneOf"):
        if key in schema:
            found: set[str] = set()
            for sub in schema[key]:
                sub_types = types_of(sub)
                if sub_types is None:
                    return None
                found |= sub_types
            return found
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return {_json_type(v) for v in values}
    return None


def _json_type(value: Any) -> str:
    for kind, cls in (("boolean", bool), ("integer", int), ("number", float), ("string", str)):
        if isinstance(value, cls):
            return kind
    return {dict: "object", list: "array", type(None): "null"}.get(type(value), "object")


def _check_types(step: Step, path: str, scope: Scope, registry: ProgramRegistry, lookup: Lookup) -> None:
    kind = program_kind(step)
    if step.kind == "workflow":
        child = lookup(step.name)
        expected = {"type": "object", "properties": child.inputs, "additionalProperties": False}
        check_value(step.input if step.input is not None else {}, expected, f"{path}.input", scope)
    elif kind is not None and step.kind != "chat":
        program = registry.get(step.name, kind)
        check_value(step.input, program.input_schema, f"{path}.input", scope)


def check_value(value: Any, schema: dict, path: str, scope: Scope) -> None:
    """Refuse `value` (literals and templates mixed) where it cannot meet `schema`."""
    if not _has_template(value):
        error = first_error(jsonschema.Draft202012Validator(schema), value)
        if error is not None:
            raise WorkflowValidationError(error.message, field_path(error, path))
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key in schema.get("required", ()):
            if key not in value:
                raise WorkflowValidationError(f"the input lacks the required field {key!r}", path)
        for key, sub in value.items():
            if key not in properties and schema.get("additionalProperties") is False:
                raise WorkflowValidationError(
                    f"is not an input field; the fields are: {', '.join(properties) or 'none'}",
                    f"{path}.{key}",
                )
            check_value(sub, properties.get(key, {}), f"{path}.{key}", scope)
        return
    if isinstance(value, list):
        for index, sub in enumerate(value):
            check_value(
                sub,
                schema.get("items") if isinstance(schema.get("items"), dict) else {},
                f"{path}[{index}]",
                scope,
            )
        return
    expected = types_of(schema)
    actual = _template_types(value, path, scope)
    if expected is not None and actual is not None and not actual & expected:
        raise WorkflowValidationError(
            f"expects {'/'.join(sorted(expected))}, but the template gives {'/'.join(sorted(actual))}", path
        )


def _template_types(text: str, path: str, scope: Scope) -> set[str] | None:
    expression = templates.single_expression(text)
    if expression is None:
        return {"string"}
    references = templates.check(expression, path, expression=True)
    if not templates.whole_reference(expression) or len(references) != 1:
        return None  # a computed value: its type is known only when it runs
    return types_of(scope.schema_of(references[0], path))


def _has_template(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return templates.is_template(value)
