"""The tool registry: lookup, argument checking against JSON Schema, capabilities, OpenAI rendering."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from llmasos.errors import InvalidRequestError, PermissionDeniedError, ToolNotFoundError
from llmasos.security.apps import App
from llmasos.security.audit import AuditLog
from llmasos.tools.builtin import builtin_tools
from llmasos.tools.registry import Tool, ToolContext, ToolRegistry, ToolResult, default_registry, get_tool
from tests.helpers.programs import syscalls_without_models

BUILTIN = ["calculator", "clock", "embed", "knowledge", "kv", "ocr", "speak", "transcribe"]


class EchoTool(Tool):
    name = "echo"
    description = "Repeat a word n times."
    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "word": {"type": "string", "minLength": 1},
            "times": {"type": "integer", "minimum": 1, "maximum": 5, "default": 2},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["word"],
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        return ToolResult(self.name, {"text": " ".join([args["word"]] * args["times"])})


class BrokenTool(EchoTool):
    name = "broken"

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        return ToolResult(self.name, {"text": 42})


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([EchoTool(), BrokenTool()])


@pytest.fixture
def syscalls():
    return syscalls_without_models()


@pytest.fixture
def context() -> ToolContext:
    return ToolContext(App("tester"))


def test_builtin_tools_are_listed_with_capabilities_and_no_network() -> None:
    tools = default_registry().list_tools()
    assert [t.name for t in tools] == BUILTIN
    assert all(t.capability == f"tool:{t.name}" and not t.touches_network for t in tools)
    assert {t.name for t in tools if t.touches_files} == {"knowledge", "ocr", "speak", "transcribe"}
    effects = {t.name: {str(e) for e in t.side_effects} for t in tools}
    assert effects["knowledge"] == {"app_data"} and effects["ocr"] == {"files"} and effects["clock"] == set()
    assert all(default_registry().examples_of(t) for t in tools)  # every built-in teaches the router
    assert get_tool("ocr").name == "ocr"


def test_unknown_tool_is_a_404_naming_the_known_ones(registry: ToolRegistry, context: ToolContext) -> None:
    with pytest.raises(ToolNotFoundError) as err:
        registry.call("teleport", {}, context)
    assert err.value.http_status == 404
    assert "teleport" in str(err.value) and "echo" in str(err.value)


def test_arguments_are_validated_and_defaults_filled(registry: ToolRegistry, context: ToolContext) -> None:
    assert registry.call("echo", {"word": "hi"}, context).output == {"text": "hi hi"}
    assert registry.call("echo", {"word": "hi", "times": 3}, context).output == {"text": "hi hi hi"}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"word": "hi", "times": "3"}, "'times'"),
        ({"word": "hi", "times": 9}, "'times'"),
        ({}, "'word'"),
        ({"word": "hi", "colour": "red"}, "'colour'"),
        ({"word": "hi", "tags": ["a", 7]}, "'tags[1]'"),
        ({"word": ""}, "'word'"),
    ],
)
def test_bad_arguments_name_the_field(
    registry: ToolRegistry, context: ToolContext, args: dict, field: str
) -> None:
    with pytest.raises(InvalidRequestError) as err:
        registry.call("echo", args, context)
    assert f"field {field}" in str(err.value)
    assert "word: string" in str(err.value)  # and the expected arguments, so the caller can fix them


def test_arguments_must_be_an_object(registry: ToolRegistry, context: ToolContext) -> None:
    with pytest.raises(InvalidRequestError, match="must be a JSON object, got list"):
        registry.call("echo", ["hi"], context)


def test_the_system_call_refuses_an_app_without_the_capability(registry: ToolRegistry, syscalls) -> None:
    limited = App("limited", capabilities=("model:*", "tool:calc*"))
    with pytest.raises(PermissionDeniedError, match="tool:echo") as err:
        registry.run(syscalls, limited, "echo", {"word": "hi"})
    assert err.value.http_status == 403
    allowed = App("echoer", capabilities=("tool:echo",))
    assert registry.run(syscalls, allowed, "echo", {"word": "hi"}).output["text"] == "hi hi"
    rows = AuditLog().query()
    assert [(r["app"], r["call"], r["outcome"]) for r in reversed(rows) if r["app"] != "system"] == [
        ("limited", "tool.echo", "denied"),
        ("echoer", "tool.echo", "ok"),
    ]


def test_the_capability_is_checked_before_the_arguments(registry: ToolRegistry, syscalls) -> None:
    limited = App("limited", capabilities=("model:*",))
    with pytest.raises(PermissionDeniedError):
        registry.run(syscalls, limited, "echo", {"bad": True})


def test_a_result_outside_the_tool_schema_is_an_internal_error(
    registry: ToolRegistry, context: ToolContext
) -> None:
    with pytest.raises(Exception, match="outside its schema") as err:
        registry.call("broken", {"word": "x"}, context)
    assert err.value.http_status == 500


def test_a_tool_with_an_invalid_schema_is_refused_at_registration() -> None:
    class Bad(EchoTool):
        name = "bad"
        parameters: ClassVar[dict] = {"type": "object", "properties": {"n": {"type": "integr"}}}

    with pytest.raises(InvalidRequestError, match="not valid JSON Schema"):
        ToolRegistry([Bad()])
    with pytest.raises(InvalidRequestError, match="already registered"):
        ToolRegistry([EchoTool(), EchoTool()])


def test_openai_rendering_lists_the_tools_an_app_may_use() -> None:
    registry = default_registry()
    entries = registry.openai_tools()
    assert [e["function"]["name"] for e in entries] == BUILTIN
    calculator = next(e for e in entries if e["function"]["name"] == "calculator")
    assert calculator == {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": get_tool("calculator").description,
            "parameters": get_tool("calculator").parameters,
        },
    }
    app = App("mathy", capabilities=("tool:calculator", "tool:clock"))
    assert [e["function"]["name"] for e in registry.openai_tools(app)] == ["calculator", "clock"]


def test_every_builtin_schema_is_an_object_schema_without_extra_fields() -> None:
    for tool in builtin_tools():
        assert tool.parameters["type"] == "object"
        assert tool.parameters["additionalProperties"] is False, tool.name
        assert tool.description.strip()


def test_file_roots_bound_what_a_caller_may_read(tmp_path: Path) -> None:
    inside, outside = tmp_path / "mine", tmp_path / "theirs"
    inside.mkdir()
    context = ToolContext(App("remote"), file_roots=(inside,))
    assert context.check_path(inside / "a.png", purpose="read") == (inside / "a.png").resolve()
    with pytest.raises(PermissionDeniedError, match="outside its folders"):
        context.check_path(outside / "a.png", purpose="read")
    with pytest.raises(PermissionDeniedError):
        context.check_path(inside / ".." / "theirs" / "a.png", purpose="read")
    assert ToolContext(App("local")).check_path(outside, purpose="read") == outside.resolve()
