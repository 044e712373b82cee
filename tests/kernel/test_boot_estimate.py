"""The residency manager's estimate of a library model's size follows how the engine will hold it."""

from __future__ import annotations

from types import SimpleNamespace

from llmasos.config import EngineConfig
from llmasos.kernel.boot import library_loader


class _Store:
    def get(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(parameter_count=1_500_000_000)


def test_a_packed_model_is_estimated_at_a_byte_a_parameter_and_floats_at_four() -> None:
    reserved = 512 * 2**20 + 128 * 2**20
    _, packed = library_loader(EngineConfig(device="cpu"), _Store())
    _, floats = library_loader(EngineConfig(device="cpu", weight_format="float32"), _Store())
    assert packed("qwen") == 1_500_000_000 + reserved
    assert floats("qwen") == 4 * 1_500_000_000 + reserved
