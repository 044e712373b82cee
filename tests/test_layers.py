"""Layers import downward only (see ARCHITECTURE.md): parse every module's imports and check."""

from __future__ import annotations

import ast
from pathlib import Path

import llmasos

PACKAGE = Path(llmasos.__file__).parent

# Lower numbers are lower layers; a module may import its own layer or any lower one.
LAYERS = {
    "errors": 0,
    "config": 0,
    "storage": 1,
    "security": 1,
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
}


def _layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "llmasos" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert subpackages | modules <= set(LAYERS), "give every new subpackage a layer in this test"


def test_layers_import_downward_only() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        own = _layer_of(".".join(relative.parts))
        if own is None:
            continue
        for imported in _imports(path):
            theirs = _layer_of(imported)
            if theirs is not None and theirs > own:
                violations.append(f"{relative} imports {imported}")
    assert not violations, "upward imports:\n" + "\n".join(violations)
