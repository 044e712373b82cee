"""The plugin loader: built-ins through the same door, each entry point once, and a plugin that fails
(on import, in its hook, or by taking a used name) reported, rolled back and skipped."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import pytest

from llmasos.programs import GROUP, ProgramRegistry, load_plugins
from llmasos.programs import plugins as plugins_module

GOOD = """
from typing import ClassVar
from llmasos.tools import Tool, ToolResult

class Upper(Tool):
    name = "upper"
    description = "Upper-case a text."
    parameters: ClassVar[dict] = {"type": "object", "properties": {"text": {"type": "string"}},
                                  "required": ["text"], "additionalProperties": False}
    result_schema: ClassVar[dict] = {"type": "object"}

    def run(self, args, context):
        return ToolResult(self.name, {"text": args["text"].upper()})

def register(registry):
    registry.register(Upper())
"""
HALF = """
from plugin_good import Upper

class Lower(Upper):
    name = "lower"

def register(registry):
    registry.register(Lower())
    raise ValueError("failed after registering one program")
"""
TAKER = """
from plugin_good import Upper

class Summarize(Upper):
    name = "summarize"

def register(registry):
    registry.register(Summarize())
"""


@pytest.fixture
def plugin_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, source in {
        "plugin_good": GOOD,
        "plugin_half": HALF,
        "plugin_taker": TAKER,
        "plugin_broken": "raise ImportError('no such dependency: frobnicate')\n",
        "plugin_constant": "register = 42\n",
    }.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))


def _entry(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name, value, GROUP)


def test_the_builtins_come_through_the_plugin_door() -> None:
    registry = ProgramRegistry()
    infos = load_plugins(registry)
    assert [(i.name, i.entry_point) for i in infos[:3]] == [
        ("services", "llmasos.services.builtin:register"),
        ("tools", "llmasos.tools.builtin:register"),
        ("workflow-functions", "llmasos.workflows.builtin:register"),
    ]
    assert infos[0].distribution == "llmasos" and infos[0].error is None
    assert set(infos[0].programs) == {p.name for p in registry.list_services()}
    assert set(infos[1].programs) == {p.name for p in registry.list_tools()}
    assert (
        set(infos[2].programs) == {p.name for p in registry.list("function")} == {"clean_text", "join_texts"}
    )
    assert registry.plugins == infos


def test_an_entry_point_listed_twice_is_loaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = [
        _entry("services", "llmasos.services.builtin:register"),
        _entry("extra", "plugin_good:register"),
    ]
    monkeypatch.setattr(plugins_module.metadata, "entry_points", lambda group: installed)
    values = [e.value for e in plugins_module.entry_points()]
    assert values == [
        "llmasos.services.builtin:register",
        "llmasos.tools.builtin:register",
        "llmasos.workflows.builtin:register",
        "plugin_good:register",
    ]


def test_failing_plugins_are_reported_rolled_back_and_skipped(plugin_modules, caplog) -> None:
    registry = ProgramRegistry()
    load_plugins(registry, list(plugins_module.BUILTIN))
    before = {p.name for p in registry.list()}
    entries = [
        _entry("broken", "plugin_broken:register"),
        _entry("half", "plugin_half:register"),
        _entry("taker", "plugin_taker:register"),
        _entry("constant", "plugin_constant:register"),
        _entry("good", "plugin_good:register"),
    ]
    with caplog.at_level(logging.WARNING, logger="llmasos.programs.plugins"):
        infos = {i.name: i for i in load_plugins(registry, entries)}
    assert "ImportError: no such dependency: frobnicate" in infos["broken"].error
    assert "failed after registering one program" in infos["half"].error
    assert "'summarize' is already registered (by services" in infos["taker"].error
    assert "is a int, not a callable" in infos["constant"].error
    assert all(not infos[n].programs for n in ("broken", "half", "taker", "constant"))
    assert infos["good"].error is None and infos["good"].programs == ("upper",)
    assert {p.name for p in registry.list()} == before | {"upper"}  # "lower" was taken back
    assert registry.get("summarize").kind == "service"  # the taker did not replace it
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "plugin broken (plugin_broken:register) failed to load and is skipped" in logged


def test_a_registered_program_must_be_a_program_with_a_clean_name() -> None:
    from llmasos.errors import PluginError
    from llmasos.tools.calculator import CalculatorTool

    registry = ProgramRegistry()
    with pytest.raises(PluginError, match="not a Program"):
        registry.register(object())  # type: ignore[arg-type]

    class Spaced(CalculatorTool):
        name = "two words"

    with pytest.raises(PluginError, match="letters, digits"):
        registry.register(Spaced())
