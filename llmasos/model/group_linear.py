"""The 8-bit grouped linear layer: W = q * d + m with int8 q and float32 d, m per group of 16 inputs.

Why: every GGUF block format is exactly that form (gguf_blocks.int8_group_values), so projections stored in
Q5_0, Q5_1, Q5_K, Q6_K or Q8_0 (and fused projections mixing them with 4-bit parts, as Qwen2.5's Q4_K_M
file does for attn_v and ffn_down) are computed as the file means them instead of re-quantized to 4 bits.
It costs 12 bits a weight (8 for q, 4 for d and m) against the 4-bit layout's 4.5, so the builder uses
it only where a part has more than 4 bits (packed_build.py).

With the C++ kernels (csrc/group_gemm.cpp) every step runs them, activations rounded as for the 4-bit
GEMM; without them the layer multiplies a float32 copy of its weights (the torch fallback).
"""

from __future__ import annotations

import torch

from llmasos.model.block_layout import BLOCK_ROWS, pack_int8_blocks, to_row_blocks
from llmasos.model.native import cpu_kernels
from llmasos.model.quant_linear import DEFAULT_MAX_QUANT_TOKENS, _bf16, _nbytes, _QuantLinear

SUB_GROUP = 16


class Int8GroupLinear(_QuantLinear):
    """W = q * d + m, q int8 (out, in), d and m float32 (out, in/16)."""

    @classmethod
    def from_groups(
        cls,
        q: torch.Tensor,
        d: torch.Tensor,
        m: torch.Tensor,
        bias: torch.Tensor | None,
        max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
        keep_dense: bool = False,
    ) -> Int8GroupLinear:
        """The layer of weights q * d + m as gguf_blocks.int8_group_values reads them; a float32 copy is
        made only with keep_dense or where the C++ kernels are unavailable."""
        out_features, in_features = q.shape
        fits = d.shape == m.shape == (out_features, in_features // SUB_GROUP)
        if out_features % BLOCK_ROWS or in_features % 32 or not fits:
            raise ValueError(
                f"8-bit groups of shape {tuple(q.shape)} / {tuple(d.shape)} do not fit the layout"
            )
        kernels = cpu_kernels()
        dense = None
        if keep_dense or kernels is None:
            groups = q.view(out_features, -1, SUB_GROUP).float() * d[..., None] + m[..., None]
            dense = groups.view(out_features, in_features)
        layer = cls.__new__(cls)
        _QuantLinear.__init__(layer, dense, _bf16(bias), max_quant_tokens)
        layer.out_features, layer.in_features, layer.kernels = out_features, in_features, kernels
        if kernels is not None:
            layer.q = pack_int8_blocks(q.to(torch.int8))
            layer.d, layer.m = to_row_blocks(d.float()), to_row_blocks(m.float())
        return layer

    @classmethod
    def from_packed(
        cls,
        q: torch.Tensor,
        d: torch.Tensor,
        m: torch.Tensor,
        bias: torch.Tensor | None,
        shape: tuple[int, int],
        max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
    ) -> Int8GroupLinear:
        """A layer over tensors already in the kernels' layout (`native_tensors`, as packed_cache.py stores
        them), taken as they are; needs the kernels."""
        kernels = cpu_kernels()
        if kernels is None:
            raise RuntimeError("Int8GroupLinear.from_packed needs the C++ kernels")
        out_features, in_features = shape
        if q.shape != (out_features // BLOCK_ROWS, in_features // 2, 2 * BLOCK_ROWS):
            raise ValueError(f"packed 8-bit groups {tuple(q.shape)} do not fit the shape {shape}")
        layer = cls.__new__(cls)
        _QuantLinear.__init__(layer, None, _bf16(bias), max_quant_tokens)
        layer.out_features, layer.in_features, layer.kernels = out_features, in_features, kernels
        layer.q, layer.d, layer.m = q, d, m
        return layer

    def _int_mm(self, x: torch.Tensor) -> torch.Tensor:  # without the kernels: the float32 copy
        return torch.nn.functional.linear(x.float(), self.dense).to(torch.bfloat16)

    def _native_mm(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.q8g_linear(x, self.q, self.d, self.m)

    def _dense_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.round_activations(x)

    def native_tensors(self) -> list[torch.Tensor] | None:
        """(q, d, m, an empty row scale, float32 bias or empty) for the C++ forward step, which tells this
        layer from Int4Linear by q's dtype; None without the kernels."""
        if self.kernels is None:
            return None
        bias = torch.empty(0) if self.bias is None else self.bias.float().contiguous()
        return [self.q, self.d, self.m, torch.empty(0), bias]

    def quant_bytes(self) -> int:
        if self.kernels is not None:
            return _nbytes(self.q, self.d, self.m)
        return _nbytes(self.dense)
