"""ModelStore: pulling GGUF files and Hugging Face folders, list/get/remove, names, modes, idempotence."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from llmasos.config import DEFAULT_MODEL, llmasos_home, models_dir
from llmasos.errors import InvalidRequestError, ModelNotFoundError, ModelSourceError
from llmasos.library import ModelManifest, ModelStore
from llmasos.library import store as store_mod
from llmasos.library.digest import folder_digest
from tests.library.builders import TINY_GGUF_PARAMS, write_tiny_gguf
from tests.library.conftest import snapshot


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_gguf_records_manifest(store: ModelStore, tiny_gguf: Path) -> None:
    m = store.pull(str(tiny_gguf), progress=False)
    assert m.name == "tiny-test-q8_0"  # from the file name
    assert (m.architecture, m.format, m.quantization) == ("llama", "gguf", "Q8_0")
    assert m.parameter_count == TINY_GGUF_PARAMS
    assert m.context_length == 256
    assert m.license == "mit"
    assert m.has_chat_template is True
    assert m.sha256 == sha256(tiny_gguf)
    assert m.file_size == tiny_gguf.stat().st_size
    assert m.files == ("Tiny-Test.Q8_0.gguf",)
    assert m.source == str(tiny_gguf.resolve())
    assert store.model_path(m.name) == models_dir() / m.name / "Tiny-Test.Q8_0.gguf"
    assert store.model_path(m.name).read_bytes() == tiny_gguf.read_bytes()
    assert store.get(m.name) == m
    assert ModelManifest.from_json(m.to_json()) == m


def test_quantization_falls_back_to_tensor_types(store: ModelStore, tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "x.gguf", file_type=None, license=None, chat_template=None)
    m = store.pull(str(path), progress=False)
    assert m.quantization == "Q8_0"  # most common non-float tensor type
    assert m.license == "unknown"
    assert m.has_chat_template is False


def test_pull_hf_folder(store: ModelStore, tiny_folder: Path) -> None:
    m = store.pull(str(tiny_folder), progress=False)
    assert m.name == "tiny_hf-model"
    assert (m.architecture, m.format, m.quantization) == ("llama", "safetensors", "F16")
    assert m.parameter_count == 10 * 8 + 8
    assert m.context_length == 512
    assert m.has_chat_template is True
    assert m.model_path == "."
    expected = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    assert m.files == expected  # notes.txt is not a model file
    assert store.model_path(m.name) == models_dir() / m.name
    # The folder digest is sha256 over `sha256sum`-style lines, sorted by path (see library.digest).
    lines = "".join(f"{sha256(tiny_folder / f)}  {f}\n" for f in sorted(expected))
    assert m.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    assert m.sha256 == folder_digest(models_dir() / m.name, expected)
    assert m.file_size == sum((tiny_folder / f).stat().st_size for f in expected)


def test_list_get_remove(store: ModelStore, tiny_gguf: Path, tiny_folder: Path) -> None:
    assert store.list() == []
    a = store.pull(str(tiny_gguf), progress=False)
    b = store.pull(str(tiny_folder), progress=False)
    assert [m.name for m in store.list()] == sorted([a.name, b.name])
    assert store.remove(a.name) == a
    assert [m.name for m in store.list()] == [b.name]
    assert sorted(os.listdir(models_dir())) == [b.name]  # no trash left behind
    with pytest.raises(ModelNotFoundError):
        store.remove(a.name)


def test_unknown_name_lists_models_and_pull_command(store: ModelStore, tiny_gguf: Path) -> None:
    store.pull(str(tiny_gguf), progress=False)
    with pytest.raises(ModelNotFoundError) as err:
        store.get("nope")
    assert "tiny-test-q8_0" in str(err.value)
    assert "llmasos models pull SOURCE" in str(err.value)
    with pytest.raises(ModelNotFoundError):
        store.get("../src")  # never a path outside the store


@pytest.mark.parametrize("name", ["default", DEFAULT_MODEL])
def test_missing_default_says_pull_default(store: ModelStore, name: str) -> None:
    with pytest.raises(ModelNotFoundError, match="llmasos models pull default"):
        store.get(name)


def test_default_alias_resolves(store: ModelStore, tiny_gguf: Path) -> None:
    store.pull(str(tiny_gguf), name=DEFAULT_MODEL, progress=False)
    assert store.get("default").name == DEFAULT_MODEL
    assert store.model_path("default") == store.model_path(DEFAULT_MODEL)


@pytest.mark.parametrize("bad", ["default", "Upper", "a/b", "..", "-x", "", "x" * 200])
def test_bad_names_rejected(store: ModelStore, tiny_gguf: Path, bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        store.pull(str(tiny_gguf), name=bad, progress=False)
    assert snapshot(models_dir()) == []


def test_private_modes(store: ModelStore, tiny_gguf: Path, tiny_folder: Path) -> None:
    for source in (tiny_gguf, tiny_folder):
        m = store.pull(str(source), progress=False)
        model_dir = models_dir() / m.name
        for d in (llmasos_home(), models_dir(), model_dir):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        for f in model_dir.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_repull_same_source_returns_existing_without_copying(
    store: ModelStore, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.pull(str(tiny_gguf), progress=False)

    def no_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-pull copied the model again")

    monkeypatch.setattr(store_mod, "copy_file", no_copy)
    assert store.pull(str(tiny_gguf), progress=False) == first
    assert store.pull(str(tiny_gguf), name=first.name, progress=False) == first


def test_changed_local_file_is_not_silently_reused(store: ModelStore, tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", name="a")
    store.pull(str(path), progress=False)
    write_tiny_gguf(path, name="a much longer general.name")  # same path, new size
    with pytest.raises(ModelSourceError, match="--force"):
        store.pull(str(path), progress=False)


def test_name_taken_by_other_source(store: ModelStore, tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=1)
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=2)
    store.pull(str(a), name="m", progress=False)
    before = snapshot(models_dir())
    with pytest.raises(ModelSourceError) as err:
        store.pull(str(b), name="m", progress=False)
    assert "llmasos models rm m" in str(err.value) and "--force" in str(err.value)
    assert snapshot(models_dir()) == before


def test_force_replaces(store: ModelStore, tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=1)
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=2)
    old = store.pull(str(a), name="m", progress=False)
    new = store.pull(str(b), name="m", force=True, progress=False)
    assert new.sha256 == sha256(b) != old.sha256
    assert store.get("m") == new
    assert sorted(os.listdir(models_dir())) == ["m"]
    assert sorted(os.listdir(models_dir() / "m")) == ["b.gguf", "manifest.json"]


def test_store_root_is_read_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore()
    monkeypatch.setenv("LLMASOS_HOME", str(tmp_path / "elsewhere"))
    assert store.root == tmp_path / "elsewhere" / "models"
    assert ModelStore(tmp_path / "explicit").root == tmp_path / "explicit"
