"""Fixtures for the model library tests: a store in the test's LLMASOS_HOME and tiny model files."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmasos.library import ModelStore
from tests.library.builders import write_tiny_gguf, write_tiny_hf_folder


@pytest.fixture
def store() -> ModelStore:
    """A store at the default place, `$LLMASOS_HOME/models` (empty: conftest gives a fresh home)."""
    return ModelStore()


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "src" / "Tiny-Test.Q8_0.gguf")


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return write_tiny_hf_folder(tmp_path / "src" / "Tiny_HF-Model")


def snapshot(root: Path) -> list[tuple[str, int]]:
    """Every path under `root` (hidden ones included) with its size: equal snapshots, same store."""
    if not root.exists():
        return []
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")
    )
