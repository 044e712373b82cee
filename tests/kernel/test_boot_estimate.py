"""The residency manager's estimate of a library model's size follows how the engine will hold it; a
library load records the packed cache it wrote in the model's manifest."""

from __future__ import annotations

from types import SimpleNamespace

import gguf
import pytest

from llmasos.config import EngineConfig
from llmasos.kernel.boot import library_loader
from llmasos.library import ModelStore
from llmasos.library.digest import file_sha256
from llmasos.model.native import cpu_kernels
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf


class _Store:
    def get(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(parameter_count=1_500_000_000)


def test_a_packed_model_is_estimated_at_a_byte_a_parameter_and_floats_at_four() -> None:
    """The estimate is what a load holds at once: weights and the swap reserve, not the KV pool (mapped
    lazily and charged as it is touched)."""
    _, packed = library_loader(EngineConfig(device="cpu"), _Store())
    _, floats = library_loader(EngineConfig(device="cpu", weight_format="float32"), _Store())
    _, reserving = library_loader(EngineConfig(device="cpu", swap_reserve_bytes=2**20), _Store())
    assert packed("qwen") == 1_500_000_000
    assert floats("qwen") == 4 * 1_500_000_000
    assert reserving("qwen") == 1_500_000_000 + 2**20


def test_the_first_packed_load_records_its_cache_digest_in_the_manifest(tmp_path) -> None:
    if cpu_kernels() is None:
        pytest.skip("the packed cache holds the C++ kernels' layout; they do not build here")
    path, _ = write_tiny_gguf(tmp_path / "tiny.gguf", TinySpec(qtype=gguf.GGMLQuantizationType.Q4_1))
    store = ModelStore()
    store.pull(str(path), name="tiny", progress=False)
    assert store.get("tiny").packed_sha256 == ""
    load, _ = library_loader(EngineConfig(device="cpu", kv_cache_bytes=4 * 2**20), store)
    load("tiny")  # packs, writes the cache beside the stored file
    manifest = store.get("tiny")
    cache = store.model_path("tiny").parent / manifest.packed_file
    assert manifest.packed_file.endswith(".int4.pt") and manifest.packed_sha256 == file_sha256(cache)
    load("tiny")  # reads the cache: the manifest keeps what the writing load recorded
    assert store.get("tiny") == manifest
