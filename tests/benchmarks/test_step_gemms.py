"""step_gemms.py times each projection through the kernel of its format, told apart as the C++ step does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.step_gemms import PROJECTIONS, kernel_call
from llmasos.model.loader import load_model
from tests.helpers.tiny_model import MIXED, Q6K_MIXED, write_tiny_gguf


@pytest.mark.parametrize("spec", [MIXED, Q6K_MIXED], ids=["q4-and-8-bit-groups", "q4-and-q6k"])
def test_each_projection_is_timed_through_its_own_kernel(spec, tmp_path: Path) -> None:
    path, _ = write_tiny_gguf(tmp_path / "mixed.gguf", spec)
    model = load_model(path, packed_format="int4").model
    if getattr(model, "native_kernels", None) is None:
        pytest.skip("the C++ kernels are not built here")
    torch.manual_seed(0)
    formats = set()
    for layer in model.layers:
        for name in PROJECTIONS:
            proj = getattr(layer, name)
            in_features, fmt, fn = kernel_call(model.native_kernels, proj.native_tensors())
            x = torch.randn(5, in_features)
            assert in_features == proj.in_features
            assert torch.equal(fn(x), proj(x)), f"{name} ({fmt}) is not the projection's own product"
            formats.add(fmt)
    # Both files' fused qkv mixes a wider v with 4-bit q and k, so it stays in 8-bit groups.
    assert formats == ({"q4", "q8g"} if spec is MIXED else {"q4", "q8g", "q6k"})
