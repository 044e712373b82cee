"""Bad workflows are refused at submission, each with the path of its mistake; good ones pass, in
YAML and from the Python builder alike, and the published JSON Schema is the one the models make."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from llmasos.errors import WorkflowValidationError
from llmasos.workflows import WorkflowBuilder, json_schema, loads, parse, validate
from tests.helpers.workflows import Calls, make_runner, registry_with_functions

REPO = Path(__file__).resolve().parents[2]

GOOD = """
name: words
inputs:
  text: {type: string}
steps:
  shout:
    kind: function
    name: upper
    input: {text: "{{ inputs.text }}"}
  count:
    kind: function
    name: count_words
    needs: [shout]
    input: {text: "{{ steps.shout.output.text }}"}
output: "{{ steps.count.output.words }}"
"""


@pytest.fixture(scope="module")
def registry():
    return registry_with_functions(Calls())


def refused(registry, spec: dict | str, app=None) -> WorkflowValidationError:
    with pytest.raises(WorkflowValidationError) as caught:
        workflow = loads(spec) if isinstance(spec, str) else parse(spec)
        validate(workflow, registry, app)
    return caught.value


def two_steps(**second) -> dict:
    first = {"kind": "function", "name": "upper", "input": {"text": "{{ inputs.text }}"}}
    return {"name": "w", "inputs": {"text": {"type": "string"}}, "steps": {"a": first, "b": second}}


def test_a_good_workflow_passes_and_the_builder_makes_the_same(registry) -> None:
    from_yaml = loads(GOOD)
    validate(from_yaml, registry)
    flow = WorkflowBuilder("words", inputs={"text": {"type": "string"}})
    shout = flow.function("shout", "upper", input={"text": "{{ inputs.text }}"})
    flow.function("count", "count_words", needs=[shout], input={"text": "{{ steps.shout.output.text }}"})
    flow.output("{{ steps.count.output.words }}")
    assert flow.build() == from_yaml


def test_a_cycle_is_refused_naming_it(registry) -> None:
    spec = two_steps(kind="function", name="upper", input={"text": "x"}, needs=["a"])
    spec["steps"]["a"]["needs"] = ["b"]
    err = refused(registry, spec)
    assert err.path == "steps"
    assert "cycle" in err.message and "a" in err.message and "b" in err.message


def test_unknown_kind_service_tool_and_need_are_refused_with_paths(registry) -> None:
    assert refused(registry, two_steps(kind="teleport")).path == "steps.b.kind"
    err = refused(registry, two_steps(kind="service", name="summarise", input="x"))
    assert err.path == "steps.b.name" and "summarize" in err.message  # did you mean
    assert refused(registry, two_steps(kind="tool", name="nope", input={})).path == "steps.b.name"
    err = refused(registry, two_steps(kind="function", name="calculator", input={}))
    assert err.path == "steps.b.name" and "not a function" in err.message
    err = refused(registry, two_steps(kind="function", name="upper", input={"text": "x"}, needs=["ghost"]))
    assert err.path == "steps.b.needs[0]"


def test_references_to_missing_steps_fields_and_inputs_are_refused(registry) -> None:
    ref = {"kind": "function", "name": "upper", "needs": ["a"]}
    err = refused(registry, two_steps(**ref, input={"text": "{{ steps.ghost.output.text }}"}))
    assert err.path == "steps.b.input.text" and "ghost" in err.message
    err = refused(registry, two_steps(**ref, input={"text": "{{ steps.a.output.txt }}"}))
    assert err.path == "steps.b.input.text" and "no field 'txt'" in err.message and "text" in err.message
    err = refused(registry, two_steps(**ref, input={"text": "{{ inputs.nope }}"}))
    assert "inputs.nope" in err.message
    no_need = {"kind": "function", "name": "upper", "input": {"text": "{{ steps.a.output.text }}"}}
    err = refused(registry, two_steps(**no_need))
    assert err.path == "steps.b.input.text" and "needs" in err.message


def test_a_type_mismatch_against_the_input_schema_is_refused(registry) -> None:
    err = refused(registry, two_steps(kind="function", name="upper", input={"text": 42}))
    assert err.path == "steps.b.input.text" and "string" in err.message
    mismatch = {
        "kind": "function",
        "name": "upper",
        "needs": ["c"],
        "input": {"text": "{{ steps.c.output.words }}"},
    }
    spec = two_steps(**mismatch)
    spec["steps"]["c"] = {"kind": "function", "name": "count_words", "input": {"text": "hi"}}
    err = refused(registry, spec)
    assert err.path == "steps.b.input.text" and "integer" in err.message
    err = refused(registry, two_steps(kind="function", name="upper", input={}))
    assert "text" in err.message


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ inputs.text.__class__ }}",
        "{{ inputs['__globals__'] }}",
        "{% include 'x' %}",
        "{{ lipsum }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_a_template_reaching_outside_its_sandbox_is_refused(registry, template: str) -> None:
    err = refused(registry, two_steps(kind="function", name="upper", input={"text": template}))
    assert err.path == "steps.b.input.text"


def test_fan_out_beyond_the_apps_limits_is_refused(llmasos_home) -> None:
    runner, app = make_runner(Calls(), max_concurrent=4)
    step = {
        "kind": "function",
        "name": "upper",
        "input": {"text": "{{ item }}"},
        "for_each": {"items": ["a", "b"], "concurrency": 8},
    }
    err = refused(runner.registry, two_steps(**step), app)
    assert err.path == "steps.b.for_each.concurrency" and "4" in err.message
    step["for_each"] = {"items": list("abcdef"), "concurrency": 2, "max_items": 3}
    assert refused(runner.registry, two_steps(**step), app).path == "steps.b.for_each.items"
    err = refused(runner.registry, two_steps(kind="function", name="upper", input={"text": "{{ item }}"}))
    assert "for_each" in err.message


def test_a_capability_the_app_lacks_is_refused(llmasos_home) -> None:
    runner, app = make_runner(Calls(), capabilities=("function:upper",))
    spec = two_steps(kind="function", name="count_words", input={"text": "x"})
    err = refused(runner.registry, spec, app)
    assert err.path == "steps.b.name" and "function:count_words" in err.message


def test_the_published_schema_is_current_and_accepts_the_examples() -> None:
    published = json.loads((REPO / "docs" / "workflow.schema.json").read_text())
    assert published == json_schema(), "run: python -m llmasos.workflows.schema_doc to regenerate it"
    jsonschema.Draft202012Validator.check_schema(published)
    jsonschema.validate(loads(GOOD).model_dump(mode="json", exclude_unset=True), published)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "steps": {"a": {"kind": "teleport"}}}, published)


def test_bad_ids_schemas_and_nesting_are_refused(registry) -> None:
    assert "step id" in refused(registry, {"name": "w", "steps": {"A b": {"kind": "wait"}}}).message
    spec = {"name": "w", "inputs": {"a": {"type": 5}}, "steps": {"s": {"kind": "wait"}}}
    assert refused(registry, spec).path == "inputs.a"
    spec = {"name": "w", "steps": {"s": {"kind": "wait", "output_schema": {"properties": 5}}}}
    assert refused(registry, spec).path == "steps.s.output_schema"
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    assert (
        "nests deeper"
        in refused(registry, {"name": "w", "steps": {"s": {"kind": "wait", "input": deep}}}).message
    )


def test_a_yaml_alias_bomb_is_refused(registry) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "\n".join(["name: w", "extra:", *("  " + line for line in lines), "steps: {s: {kind: wait}}"])
    assert "more than" in refused(registry, bomb).message
