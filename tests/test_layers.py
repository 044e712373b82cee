"""The layers of ARCHITECTURE.md, checked by parsing every module of the package.

Three rules, each a checker that takes source text, so that the tests below can feed it the very
pattern it forbids and see it caught:
- imports go downward only: absolute, relative (`from ..kernel import x`) and from the package's
  root (`from llmasos import Client` is the SDK, the top layer);
- no import cycles (inside a layer, since across layers the first rule already forbids them),
  counting imports deferred into functions, which hide a cycle without removing it;
- nothing above the kernel reaches into its objects (`syscalls.kernel.residency...`): interfaces and
  programs go through the system calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmasos

PACKAGE = Path(llmasos.__file__).parent

# Lower numbers are lower layers; a module may import its own layer or any lower one.
LAYERS = {
    "errors": 0,
    "config": 0,
    "settings": 0,  # config.toml, the environment and flags over the defaults (llmasos/settings.py)
    "storage": 1,
    "data": 1,  # each app's files, vector stores and key-value data (below the kernel's syscalls)
    "security": 1,
    "privacy": 1,  # personal-data detection and policy (below the kernel, beside security)
    "library": 1,
    "model": 2,
    "engine": 3,
    "cluster": 3,
    "kernel": 4,
    "programs": 5,  # the one registry of services and tools, and the plugin door they enter by
    "services": 5,
    "tools": 5,
    "router": 5,
    "explain": 5,
    "workflows": 6,
    "cli": 7,
    "api": 7,
    "sdk": 7,
    "dashboard": 7,
    "console": 7,  # the web console at /ui (llmasos/console)
}
#: `llmasos` itself: its __init__ is the public API, `Client` from the SDK.
ROOT_LAYER = LAYERS["sdk"]
KERNEL_LAYER = LAYERS["kernel"]

#: Known violations, each with who removes it; a test fails when an entry is no longer needed, so
#: the list shrinks as they are fixed. Nothing may be added to it without such a note.
#: A package here may hold import cycles among its own modules.
ALLOWED_CYCLES: dict[str, str] = {}
ALLOWED_REACH_THROUGH: dict[str, str] = {}


# ---- reading the package ------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def package_sources() -> dict[str, tuple[str, bool]]:
    """module name -> (source, whether it is a package's __init__), for every module of llmasos."""
    return {_module_name(p): (p.read_text(), p.name == "__init__.py") for p in PACKAGE.rglob("*.py")}


def _is_module(name: str, known: frozenset[str] = frozenset()) -> bool:
    if name in known:
        return True
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "llmasos":
        return None
    if len(parts) == 1:
        return ROOT_LAYER
    return LAYERS.get(parts[1])


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Import nodes under `if TYPE_CHECKING:`: annotations only, never run."""
    hidden: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                hidden.update(ast.walk(child))
    return hidden


def imports_of(
    module: str,
    source: str,
    is_package: bool = False,
    *,
    runtime_only: bool = False,
    known: frozenset[str] = frozenset(),
) -> set[str]:
    """The llmasos modules that `module` imports, resolved to absolute names (relative imports too).

    `from llmasos.x import y` is `llmasos.x.y` when y is a module, else `llmasos.x`; `from llmasos import
    Name` is the package root (`llmasos`) unless Name is a module of it. With `runtime_only`, imports
    under `if TYPE_CHECKING:` are left out. `known` names modules besides the package's files.
    """
    tree = ast.parse(source)
    skipped = _type_checking_only(tree) if runtime_only else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.module, node.level)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate, known) else base)
    return {name for name in found if name == "llmasos" or name.startswith("llmasos.")}


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


# ---- the three checkers -------------------------------------------------------------------------


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    own = layer_of(module)
    if own is None:
        return []
    return sorted(
        f"{module} imports {imported}"
        for imported in imports_of(module, source, is_package)
        if (theirs := layer_of(imported)) is not None and theirs > own
    )


def import_cycles(sources: dict[str, tuple[str, bool]]) -> list[frozenset[str]]:
    """Sets of modules that import one another in a circle (strongly connected, more than one)."""
    known = frozenset(sources)
    graph: dict[str, set[str]] = {}
    for module, (src, pkg) in sources.items():
        imported = imports_of(module, src, pkg, runtime_only=True, known=known)
        graph[module] = {m for m in imported if m in known and m != module}
    return [component for component in _strongly_connected(graph) if len(component) > 1]


def _strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm, iterative (the package's import chains are deeper than is comfortable
    for recursion in a test)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(frozenset(component))
    return components


def kernel_reach_through(module: str, source: str) -> list[str]:
    """`<something>.kernel` attribute reads in a module above the kernel: a syscalls object's kernel.
    (`llmasos.kernel.boot` as a dotted module path is not one.)"""
    own = layer_of(module)
    if own is None or own <= KERNEL_LAYER:
        return []
    return [
        f"{module}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr == "kernel"
        and not (isinstance(node.value, ast.Name) and node.value.id == "llmasos")
    ]


# ---- the package keeps the rules ----------------------------------------------------------------


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert subpackages | modules <= set(LAYERS), "give every new subpackage a layer in this test"


def test_layers_import_downward_only() -> None:
    violations = [
        line for module, (src, pkg) in package_sources().items() for line in upward_imports(module, src, pkg)
    ]
    assert not violations, "upward imports:\n" + "\n".join(violations)


def _allowed_in(cycle: frozenset[str]) -> str | None:
    """The package of ALLOWED_CYCLES that holds the whole cycle, if one does."""
    return next((p for p in ALLOWED_CYCLES if all(m.startswith(p + ".") for m in cycle)), None)


def test_no_import_cycles_but_the_listed_ones() -> None:
    cycles = import_cycles(package_sources())
    new = [sorted(c) for c in cycles if _allowed_in(c) is None]
    assert not new, f"import cycles (break them; a deferred import does not): {new}"
    fixed = sorted(set(ALLOWED_CYCLES) - {_allowed_in(c) for c in cycles})
    assert not fixed, f"no cycle is left in these: remove them from ALLOWED_CYCLES: {fixed}"


def test_nothing_above_the_kernel_reaches_into_it() -> None:
    found = {
        module: lines
        for module, (src, _) in package_sources().items()
        if (lines := kernel_reach_through(module, src))
    }
    new = [line for module, lines in found.items() if module not in ALLOWED_REACH_THROUGH for line in lines]
    assert not new, "use a system call instead (add one to kernel/syscalls.py):\n" + "\n".join(new)
    fixed = sorted(set(ALLOWED_REACH_THROUGH) - set(found))
    assert not fixed, (
        f"these no longer reach into the kernel: remove them from ALLOWED_REACH_THROUGH: {fixed}"
    )


# ---- each checker catches what it forbids -------------------------------------------------------


def test_an_upward_import_is_caught_absolute_relative_or_deferred() -> None:
    assert upward_imports("llmasos.engine.engine", "from llmasos.kernel.kernel import Kernel")
    assert upward_imports("llmasos.engine.engine", "import llmasos.api.app")
    assert upward_imports("llmasos.engine.engine", "from ..kernel import syscalls")
    assert upward_imports("llmasos.kernel", "from ..api import app", is_package=True)
    assert upward_imports("llmasos.model.llama", "def f():\n    from llmasos.engine import engine\n")
    assert not upward_imports("llmasos.kernel.kernel", "from llmasos.engine.sampling import SamplingParams")
    assert not upward_imports("llmasos.kernel.kernel", "from . import process\nfrom ..engine import engine")


def test_importing_from_the_package_root_in_a_lower_layer_is_caught() -> None:
    assert upward_imports("llmasos.kernel.syscalls", "from llmasos import Client")
    assert upward_imports("llmasos.services.base", "from llmasos import __version__")
    assert upward_imports("llmasos.engine.engine", "import llmasos")
    assert upward_imports("llmasos.kernel.syscalls", "from .. import Client")
    # A module of the root is that module's layer, not the root's.
    assert not upward_imports("llmasos.kernel.syscalls", "from llmasos import errors")
    assert not upward_imports("llmasos.api.app", "from llmasos import __version__")


def test_an_import_cycle_is_caught_even_when_one_side_defers_its_import() -> None:
    sources = {
        "llmasos.tools.registry": ("def builtins():\n    from llmasos.tools import builtin\n", False),
        "llmasos.tools.builtin": ("from llmasos.tools.registry import Tool\n", False),
        "llmasos.tools.clock": ("from llmasos.tools.registry import Tool\n", False),
    }
    assert import_cycles(sources) == [frozenset({"llmasos.tools.registry", "llmasos.tools.builtin"})]
    longer = {
        "llmasos.kernel.a": ("from . import b", False),
        "llmasos.kernel.b": ("from llmasos.kernel import c", False),
        "llmasos.kernel.c": ("import llmasos.kernel.a", False),
    }
    assert import_cycles(longer) == [frozenset(longer)]


def test_imports_for_annotations_only_make_no_cycle() -> None:
    sources = {
        "llmasos.kernel.a": (
            "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from . import b\n",
            False,
        ),
        "llmasos.kernel.b": ("from llmasos.kernel import a\n", False),
    }
    assert import_cycles(sources) == []


def test_reaching_into_the_kernel_from_above_it_is_caught() -> None:
    snippet = "def handler(request):\n    return request.app.state.syscalls.kernel.residency.models\n"
    assert kernel_reach_through("llmasos.api.os_routes", snippet)
    assert kernel_reach_through("llmasos.cli.run", "syscalls.kernel.stop()")
    assert kernel_reach_through("llmasos.services.base", "engine = self.syscalls.kernel.residency.acquire(m)")
    assert kernel_reach_through("llmasos.sdk.transport", "kernel = syscalls.kernel")
    assert not kernel_reach_through("llmasos.api.app", "syscalls.start()\nllmasos.kernel.boot.boot()")
    assert not kernel_reach_through("llmasos.kernel.boot", "syscalls.kernel.start()")  # the kernel may
