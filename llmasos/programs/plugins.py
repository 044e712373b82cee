"""Plugins: the one door through which programs enter, the built-in ones included.

A plugin is a Python entry point in the group `llmasos.plugins` naming a callable that receives the
program registry and registers services and tools on it (simonw/llm's default-plugins pattern):

    [project.entry-points."llmasos.plugins"]
    shout = "llmasos_shout:register"        # def register(registry): registry.register(Shout())

The built-ins are plugins of the `llmasos` distribution declared the same way. They are also loaded
by name first, so a checkout whose installed metadata predates them still has them; an entry point
seen twice is loaded once. A plugin that fails (its import raises, its callable raises, it registers
a taken name) is reported — in `plugins list`, `GET /os/plugins` and the log — and skipped, with
whatever it registered before failing taken back; the others load.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from importlib import metadata

from llmasos.programs.registry import ProgramRegistry

log = logging.getLogger(__name__)

GROUP = "llmasos.plugins"
#: The built-in plugins, as the `llmasos` distribution declares them in pyproject.toml.
BUILTIN = (
    metadata.EntryPoint("services", "llmasos.services.builtin:register", GROUP),
    metadata.EntryPoint("tools", "llmasos.tools.builtin:register", GROUP),
    metadata.EntryPoint("workflow-functions", "llmasos.workflows.builtin:register", GROUP),
)


@dataclass(frozen=True)
class PluginInfo:
    """One plugin: where it comes from, what it registered, and why it failed if it did."""

    name: str  # the entry point's name
    entry_point: str  # module:callable
    distribution: str | None  # the installed package that declares it
    version: str | None
    programs: tuple[str, ...]
    error: str | None = None

    @property
    def module(self) -> str:
        return self.entry_point.partition(":")[0]

    @property
    def loaded(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {**asdict(self), "module": self.module, "programs": list(self.programs)}


def entry_points() -> list[metadata.EntryPoint]:
    """The built-ins, then every installed entry point of the group, each once."""
    found, seen = [], set()
    for entry in (*BUILTIN, *metadata.entry_points(group=GROUP)):
        if entry.value in seen:
            continue
        seen.add(entry.value)
        found.append(entry)
    return found


def load_plugins(
    registry: ProgramRegistry, entries: list[metadata.EntryPoint] | None = None
) -> list[PluginInfo]:
    """Load each plugin into `registry`; returns (and records on it) what each did."""
    infos = [_load_one(registry, entry) for entry in (entry_points() if entries is None else entries)]
    registry.plugins.extend(infos)
    return infos


def _load_one(registry: ProgramRegistry, entry: metadata.EntryPoint) -> PluginInfo:
    distribution, version = _distribution_of(entry)
    label = f"{entry.name} ({entry.value})"
    registry.registering = label
    try:
        hook = entry.load()
        if not callable(hook):
            raise TypeError(f"{entry.value} is a {type(hook).__name__}, not a callable taking the registry")
        hook(registry)
    except Exception as err:  # a broken plugin must never stop the others or the server
        for name in registry.names_from(label):
            registry.remove(name)
        message = f"{type(err).__name__}: {err}"
        log.warning("plugin %s failed to load and is skipped: %s", label, message)
        log.debug("plugin %s traceback", label, exc_info=True)
        return PluginInfo(entry.name, entry.value, distribution, version, (), message)
    finally:
        registry.registering = ""
    return PluginInfo(entry.name, entry.value, distribution, version, tuple(registry.names_from(label)))


def _distribution_of(entry: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(entry, "dist", None)
    if dist is not None:
        return dist.metadata["Name"], dist.version
    if entry in BUILTIN:  # loaded by name: ours, whatever the installed metadata says
        try:
            return "llmasos", metadata.version("llmasos")
        except metadata.PackageNotFoundError:
            return "llmasos", None
    return None, None


_DEFAULT: ProgramRegistry | None = None
_DEFAULT_LOCK = threading.Lock()


def default_registry() -> ProgramRegistry:
    """The process-wide registry: every installed plugin loaded on first use (models load later,
    on a program's first call)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            registry = ProgramRegistry()
            load_plugins(registry)
            _DEFAULT = registry
        return _DEFAULT


def reload_plugins() -> ProgramRegistry:
    """A fresh process-wide registry from the plugins installed now (after a `pip install`)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        _DEFAULT = None
    return default_registry()
