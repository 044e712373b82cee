"""Q6_K blocks kept at their 6 bits (gguf_blocks.q6k_blocks, q6k_linear.Q6KLinear over csrc/group_rows.h's
Q6Rows), against gguf-py's dequantization of random blocks written by the test."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from llmasos.model import q6k_linear
from llmasos.model.block_layout import pack_q6_blocks, quantize_activations, unpack_q6_blocks
from llmasos.model.gguf_blocks import q6k_blocks
from llmasos.model.gguf_weights import open_gguf
from llmasos.model.group_linear import Int8GroupLinear
from llmasos.model.loader import load_model
from llmasos.model.native import cpu_kernels
from llmasos.model.q6k_linear import Q6KLinear, q6k_dense
from tests.helpers.q6k_blocks import random_q6_k
from tests.helpers.tiny_model import Q6K_MIXED, write_tiny_gguf

Q6_K = gguf.GGMLQuantizationType.Q6_K
needs_kernels = pytest.mark.skipif(cpu_kernels() is None, reason="the C++ kernels do not build here")


def write_q6_k(path: Path, rows: int, cols: int, seed: int = 0) -> tuple[gguf.ReaderTensor, torch.Tensor]:
    """(the tensor read back from a GGUF file of random Q6_K blocks, gguf-py's float32 values of them)."""
    raw = random_q6_k(rows, cols, np.random.default_rng(seed))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", raw, raw_dtype=Q6_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (tensor,) = open_gguf(path).tensors
    reference = gguf.quants.dequantize(raw, Q6_K).reshape(rows, cols)
    return tensor, torch.from_numpy(reference.astype(np.float32))


def test_blocks_read_as_the_files_bits(tmp_path: Path) -> None:
    tensor, reference = write_q6_k(tmp_path / "w.gguf", 48, 512)
    q, sc, dsup = q6k_blocks(tensor)
    assert q.dtype == torch.uint8 and int(q.max()) <= 63 and sc.dtype == torch.int8
    assert sc.shape == (48, 32) and dsup.shape == (48, 2)
    assert torch.equal(q6k_dense(q, sc, dsup), reference)  # gguf-py's products, bit for bit
    part = q6k_blocks(tensor, slice(16, 40))
    assert all(torch.equal(a, b[16:40]) for a, b in zip(part, (q, sc, dsup), strict=True))
    assert torch.equal(unpack_q6_blocks(pack_q6_blocks(q)), q)


@needs_kernels
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 70])
def test_kernel_is_the_product_of_the_file_weights_and_the_rounded_activations(
    tmp_path: Path, n: int
) -> None:
    # 48 rows: three blocks of 16, so panels of two leave a one-block rest; 512 inputs: two super-blocks
    tensor, reference = write_q6_k(tmp_path / "w.gguf", 48, 512, seed=n)
    bias = torch.randn(48)
    layer = Q6KLinear.from_blocks(*q6k_blocks(tensor), bias)
    assert layer.kernels is not None and layer.dense is None
    assert layer.quant_bytes() == 48 * 512 * 6.625 / 8  # the file's 6.5625 bits, d widened to float
    x = torch.randn(n, 512, generator=torch.Generator().manual_seed(n)) * 3
    xr, w = quantize_activations(x).double(), reference.double()
    want = xr @ w.T + bias.to(torch.bfloat16).double()
    bound = 1e-5 * (xr.abs() @ w.abs().T) + 1e-6  # float32 rounding of the group sums only
    assert ((layer(x).double() - want).abs() <= bound).all()


@needs_kernels
def test_kernel_equals_the_8bit_groups_of_the_same_weights_bit_for_bit(tmp_path: Path) -> None:
    """The 6-bit path sums the same integers with the same scales as the 8-bit layout it replaces."""
    tensor, _ = write_q6_k(tmp_path / "w.gguf", 32, 768)
    q, sc, dsup = q6k_blocks(tensor)
    d = (sc.float().view(32, -1, 16) * dsup[..., None]).view(32, -1)
    grouped = Int8GroupLinear.from_groups((q.int() - 32).to(torch.int8), d, torch.zeros_like(d), None)
    six_bit = Q6KLinear.from_blocks(q, sc, dsup, None)
    x = torch.randn(70, 768)  # above kChunkMaxTokens: one panel of every input
    whole = six_bit(x)
    assert torch.equal(whole, grouped(x))
    # each token's result is the same whatever its batch: in place (1-8: one pass of up to 4, or two),
    # 8-group chunks (9), one panel
    for n in (1, 2, 3, 4, 5, 8, 9):
        assert torch.equal(six_bit(x[:n]), whole[:n])
        assert torch.equal(grouped(x[:n]), whole[:n])


def test_without_kernels_the_layer_multiplies_the_file_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(q6k_linear, "cpu_kernels", lambda: None)
    tensor, reference = write_q6_k(tmp_path / "w.gguf", 32, 256)
    layer = Q6KLinear.from_blocks(*q6k_blocks(tensor), None)
    assert layer.kernels is None and layer.native_tensors() is None
    x = torch.randn(5, 256)
    want = x.to(torch.bfloat16).float() @ reference.T
    torch.testing.assert_close(layer(x).float(), want, rtol=1e-2, atol=1e-2)


def test_blocks_that_do_not_fit_the_layout_are_refused(tmp_path: Path) -> None:
    tensor, _ = write_q6_k(tmp_path / "w.gguf", 32, 256)
    q, sc, dsup = q6k_blocks(tensor)
    with pytest.raises(ValueError, match="rows by 16"):
        Q6KLinear.from_blocks(q[:20], sc[:20], dsup[:20], None)
    with pytest.raises(ValueError, match="do not fit"):
        Q6KLinear.from_blocks(q, sc[:, :8], dsup, None)


@needs_kernels
def test_a_q6_k_model_keeps_its_blocks_and_answers_as_from_its_cache(tmp_path: Path) -> None:
    """Q6_K ffn_down, attn_output and head load as 6-bit layers, run in the C++ step, and the packed cache
    gives them back unchanged."""
    path, _ = write_tiny_gguf(tmp_path / "q6k.gguf", Q6K_MIXED)
    built = load_model(path, packed_format="int4").model
    layer = built.layers[0]
    assert isinstance(layer.down_proj, Q6KLinear) and isinstance(layer.o_proj, Q6KLinear)
    assert isinstance(built.logits_proj, Q6KLinear)
    assert isinstance(layer.qkv_proj, Int8GroupLinear)  # Q4_1 q, k with a Q6_K v: the 8-bit groups
    assert built.native_layers is not None
    cached = load_model(path, packed_format="int4").model
    assert isinstance(cached.layers[1].down_proj, Q6KLinear) and isinstance(cached.logits_proj, Q6KLinear)
    hidden = torch.randn(3, Q6K_MIXED.hidden)
    assert torch.equal(built.compute_logits(hidden), cached.compute_logits(hidden))
    assert torch.equal(built.layers[1].down_proj.q, cached.layers[1].down_proj.q)
