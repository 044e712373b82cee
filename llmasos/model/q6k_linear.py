"""GGUF's Q6_K blocks as a linear layer at their own 6 bits: W = dsup * sc * (q - 32), q in [0, 63], an int8
sc per group of 16 inputs and a float dsup per super-block of 256 inputs of a row.

Why: the 8-bit grouped layout (group_linear.Int8GroupLinear) holds these weights exactly but at 12 bits each
(int8 q, float d and m per 16), and the per-row int8 head at 8: a batch-1 decode step reads every weight once,
so Qwen2.5-1.5B Q4_K_M's Q6_K ffn_down (14 layers) and LM head cost 171 MB a token more than the file's
6.56 bits (1,263 MB a token in all). Here they cost 6.625 bits (the fp16 super-block scale widened to float).

With the C++ kernels (csrc/group_gemm.cpp and group_inplace.cpp, Q6Rows in group_rows.h) every step runs
them, activations rounded as for the other GEMMs; without them the layer multiplies a float32 copy of its
weights (the torch fallback, exact values: an int8 times an fp16 times a 6-bit integer is exact in float32).
"""

from __future__ import annotations

import torch

from llmasos.model.block_layout import BLOCK_ROWS, Q6_QUAD_BYTES, pack_q6_blocks, to_row_blocks
from llmasos.model.native import cpu_kernels
from llmasos.model.quant_linear import DEFAULT_MAX_QUANT_TOKENS, _bf16, _nbytes, _QuantLinear

SUB_GROUP = 16
SUPER_GROUP = 256


def q6k_dense(q: torch.Tensor, sc: torch.Tensor, dsup: torch.Tensor) -> torch.Tensor:
    """The float32 weights (out, in) of q (out, in) in [0, 63], sc (out, in/16) and dsup (out, in/256)."""
    out_features, in_features = q.shape
    scales = sc.float().view(out_features, -1, SUPER_GROUP // SUB_GROUP) * dsup.float()[..., None]
    values = (q.view(out_features, -1, SUB_GROUP).float() - 32) * scales.view(out_features, -1)[..., None]
    return values.view(out_features, in_features)


def check_q6k_shape(out_features: int, in_features: int) -> None:
    if out_features % BLOCK_ROWS or in_features % SUPER_GROUP:
        raise ValueError(
            f"Q6_K layers need rows by {BLOCK_ROWS} and inputs by {SUPER_GROUP}, "
            f"got ({out_features}, {in_features})"
        )


class Q6KLinear(_QuantLinear):
    """W = dsup * sc * (q - 32): q (out, in) in [0, 63], sc (out, in/16) int8, dsup (out, in/256) float32."""

    @classmethod
    def from_blocks(
        cls,
        q: torch.Tensor,
        sc: torch.Tensor,
        dsup: torch.Tensor,
        bias: torch.Tensor | None,
        max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
        keep_dense: bool = False,
    ) -> Q6KLinear:
        """The layer of a Q6_K tensor's blocks as gguf_blocks.q6k_blocks reads them; a float32 copy is made
        only with keep_dense or where the C++ kernels are unavailable."""
        out_features, in_features = q.shape
        check_q6k_shape(out_features, in_features)
        if sc.shape != (out_features, in_features // SUB_GROUP) or dsup.shape != (
            out_features,
            in_features // SUPER_GROUP,
        ):
            shapes = f"{tuple(sc.shape)} / {tuple(dsup.shape)}"
            raise ValueError(f"Q6_K scales {shapes} do not fit {tuple(q.shape)}")
        kernels = cpu_kernels()
        dense = q6k_dense(q, sc, dsup) if keep_dense or kernels is None else None
        layer = cls.__new__(cls)
        _QuantLinear.__init__(layer, dense, _bf16(bias), max_quant_tokens)
        layer.out_features, layer.in_features, layer.kernels = out_features, in_features, kernels
        if kernels is not None:
            layer.q = pack_q6_blocks(q)
            layer.sc, layer.dsup = to_row_blocks(sc.to(torch.int8)), to_row_blocks(dsup.float())
        return layer

    @classmethod
    def from_packed(
        cls,
        q: torch.Tensor,
        sc: torch.Tensor,
        dsup: torch.Tensor,
        bias: torch.Tensor | None,
        shape: tuple[int, int],
        max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
    ) -> Q6KLinear:
        """A layer over tensors already in the kernels' layout (`native_tensors`, as packed_cache.py stores
        them), taken as they are; needs the kernels. A last block may hold fewer than 16 real rows (an LM
        head's vocabulary): the outputs of its padding rows are dropped."""
        kernels = cpu_kernels()
        if kernels is None:
            raise RuntimeError("Q6KLinear.from_packed needs the C++ kernels")
        out_features, in_features = shape
        if q.shape != (-(-out_features // BLOCK_ROWS), in_features // 8, Q6_QUAD_BYTES):
            raise ValueError(f"packed Q6_K blocks {tuple(q.shape)} do not fit the shape {shape}")
        layer = cls.__new__(cls)
        _QuantLinear.__init__(layer, None, _bf16(bias), max_quant_tokens)
        layer.out_features, layer.in_features, layer.kernels = out_features, in_features, kernels
        layer.q, layer.sc, layer.dsup = q, sc, dsup
        return layer

    def _int_mm(self, x: torch.Tensor) -> torch.Tensor:  # without the kernels: the float32 copy
        return torch.nn.functional.linear(x.float(), self.dense).to(torch.bfloat16)

    def _native_mm(self, x: torch.Tensor) -> torch.Tensor:
        y = self.kernels.q6k_linear(x, self.q, self.sc, self.dsup)
        return y if y.shape[1] == self.out_features else y[:, : self.out_features].contiguous()

    def _dense_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.round_activations(x)

    def native_tensors(self) -> list[torch.Tensor] | None:
        """(q, sc, dsup, an empty row scale, float32 bias or empty) for the C++ forward step, which tells this
        layer from the others by q's and sc's dtypes (uint8, int8); None without the kernels."""
        if self.kernels is None or self.out_features % BLOCK_ROWS:
            return None
        bias = torch.empty(0) if self.bias is None else self.bias.float().contiguous()
        return [self.q, self.sc, self.dsup, torch.empty(0), bias]

    def quant_bytes(self) -> int:
        if self.kernels is not None:
            return _nbytes(self.q, self.sc, self.dsup)
        return _nbytes(self.dense)
