"""Programs: services and tools, one registry, one door (plugins) and one way to run them.

from llmasos.programs import default_registry
result = default_registry().run(syscalls, app, "summarize", text, {"length": "short"})
"""

from llmasos.programs.base import (
    NO_PARAMS,
    Cancellation,
    Invocation,
    Program,
    ProgramResult,
    SideEffect,
)
from llmasos.programs.plugins import GROUP, PluginInfo, default_registry, load_plugins, reload_plugins
from llmasos.programs.registry import ProgramRegistry, openai_tools

__all__ = [
    "GROUP",
    "NO_PARAMS",
    "Cancellation",
    "Invocation",
    "PluginInfo",
    "Program",
    "ProgramRegistry",
    "ProgramResult",
    "SideEffect",
    "default_registry",
    "load_plugins",
    "openai_tools",
    "reload_plugins",
]
