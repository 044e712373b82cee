"""Linear layers over dense float32/bfloat16 weights and weight-only int8 / int4 weights.

Batch-1 decode reads every weight once per token, so its speed is memory bandwidth ÷ bytes of
weights: int8 reads a quarter of fp32's bytes, int4 (4 bits plus a bf16 scale and zero per group
of 32) about a sixth.
The int kernels are torch's CPU weight-only ops, which take bfloat16 activations (with float32
activations `_weight_int8pack_mm` is ~10x slower) and return bfloat16.

Those kernels win only while the step is memory-bound: at a few hundred tokens a dense fp32 GEMM
is 2-4x faster on an AVX2 CPU (measured; bf16 GEMMs are emulated there and slower still). So each
quantized layer also keeps the *dequantized* weights in float32 for steps of more than
`max_quant_tokens` tokens (4 bytes/param more memory, in exchange for unchanged prefill and batch
speed). Both paths compute with the same quantized weights and round activations in and out to
bfloat16, so a sequence's result does not depend on what else shares its batch beyond float
rounding order.

Q4_1 GGUF blocks (32 weights, q*d + m) survive the round trip: re-quantizing a dequantized block
with its own min/max gives back the same q, d and m, so int4 is lossless w.r.t. the file up to
the rounding of d and m (to bfloat16 for torch's op; to integer steps of a row scale for the C++
kernels, see Int4Linear).

The int ops are CPU-only (CUDA's int4 op wants another packing); on other devices the int formats
fall back to bfloat16 dense weights holding the dequantized values (same quantization error).

Where the C++ kernels build (native.py, csrc/quant_gemm.cpp; AVX2) they replace torch's int ops:
int4 and int8 layers (the LM head) round each token's activations to integers in [-ACTIVATION_MAX,
ACTIVATION_MAX] (one scale per token).
Without a dense copy (EngineConfig.dense_prefill_weights, off by default) the kernels serve every step;
with one, steps above NATIVE_MAX_TOKENS multiply it by the same rounded activations, so every path
computes the same products: a sequence's result depends on its batch or on how its prompt was
chunked only through float rounding order. Their outputs are float32.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from llmasos.model.block_layout import (
    BLOCK_ROWS,
    INT4_GROUP,
    from_row_blocks,
    pack_int4_blocks,
    pack_int8_blocks,
    to_row_blocks,
    unpack_int4_blocks,
)
from llmasos.model.int_weights import int4_requantize, int8_rows, integer_groups
from llmasos.model.native import cpu_kernels

# Steps with more tokens than this take the dense float32 path. Measured on the AVX2 CPU (30 distinct
# weights of each layer shape, so they stream from memory): int kernels win at 1 token (1.3-2.7x),
# tie at 8, and lose at 16 (fp32 1.2-1.3x faster) and 32 (1.6-1.9x).
DEFAULT_MAX_QUANT_TOKENS = 8
# With the C++ kernels (native.py), steps of up to this many tokens use them. With 2 threads, per layer
# shape of SmolLM2 (fp32: MKL on the dequantized copy, activations rounded alike), the panel GEMM was
# 1.1-1.3x faster than fp32 at 64 tokens, 1.2-1.4x at 128, 0.9-1.1x at 256 and 0.8-1.1x at 512 (one run
# per size; this VM's timings move by +-25% between runs).
NATIVE_MAX_TOKENS = 128
# Decode steps of up to this many sequences run the C++ forward step: with 2 threads it was 1.1-1.2x
# faster than the torch layers (dense GEMMs) at 24 and 32 sequences too, as it skips their per-op work.
NATIVE_DECODE_MAX_SEQS = 64


class DenseLinear(nn.Module):
    """y = x Wᵀ + b with W in a chosen dtype; x is cast to it (bfloat16 weights on CUDA, say)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.to(weight.dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)

    def bytes_per_token(self) -> int:
        return _nbytes(self.weight, self.bias)


class _QuantLinear(nn.Module):
    """Shared by the int formats: small steps run the int kernel, large ones the dequantized copy."""

    def __init__(self, dense: torch.Tensor | None, bias: torch.Tensor | None, max_quant_tokens: int) -> None:
        super().__init__()
        # Dequantized weights for large steps; None: always use the int kernel (keep_dense=False, as
        # for the LM head, whose rows are at most one per sampled sequence). The int layers keep the
        # copy whatever keep_dense says where the C++ kernels are unavailable: torch's int ops are
        # 1.5-4x slower than fp32 GEMMs on large steps.
        self.dense = dense
        self.bias = bias
        self.max_quant_tokens = max_quant_tokens

    def _int_mm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    kernels = None  # the C++ kernel module (native.py) where this layer uses it

    def _native_mm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _dense_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the dense path multiplies when the C++ kernels serve small steps: x as they see it."""
        return x.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, in) -> (n, out) bfloat16 or float32
        small = self.dense is None or x.shape[0] <= self.max_quant_tokens
        if self.kernels is not None:
            # The C++ kernels serve every step up to NATIVE_MAX_TOKENS (they beat fp32 GEMMs there);
            # larger ones multiply the dense copy by the activations as the kernel sees them, so both
            # paths compute the same products and differ only in float rounding order.
            if self.dense is None or x.shape[0] <= NATIVE_MAX_TOKENS:
                y = self._native_mm(x)
            else:
                y = F.linear(self._dense_input(x), self.dense)
        elif small:
            y = self._int_mm(x.to(torch.bfloat16))
        else:
            y = F.linear(x.to(torch.bfloat16).float(), self.dense).to(torch.bfloat16)
        return y if self.bias is None else y + self.bias

    def quant_bytes(self) -> int:
        raise NotImplementedError

    def bytes_per_token(self) -> int:
        """Bytes a one-token step reads: the int weights and their scales (not the dense copy)."""
        return self.quant_bytes() + _nbytes(self.bias)


class Int8Linear(_QuantLinear):
    """Per-output-channel symmetric int8: W ≈ q * s, q in [-127, 127]."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, max_quant_tokens: int, keep_dense: bool = True
    ) -> None:
        q, scales = int8_rows(weight)
        self._init_int8(q, scales, bias, max_quant_tokens, keep_dense)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[torch.Tensor],
        shape: tuple[int, int],
        max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
    ) -> Int8Linear:
        """The layer (no bias, no dense copy) of an (out, in) weight given as slices of rows, each a multiple
        of 16 rows but the last (gguf_blocks.dequantize_rows), quantized and packed as it comes: neither the
        float32 weight nor an unpacked int8 copy is ever whole (a 151,936-row vocabulary is 933 MB of the
        first, 233 MB of the second)."""
        out_features, in_features = shape
        layer = cls.__new__(cls)
        kernels = cpu_kernels() if in_features % INT4_GROUP == 0 else None
        if kernels is None:
            parts = [int8_rows(r) for r in rows]
            layer._init_int8(
                torch.cat([p[0] for p in parts]),
                torch.cat([p[1] for p in parts]),
                None,
                max_quant_tokens,
                False,
            )
            return layer
        _QuantLinear.__init__(layer, None, None, max_quant_tokens)
        padded = out_features + (-out_features % BLOCK_ROWS)
        layer.qweight = torch.empty(padded // BLOCK_ROWS, in_features // 2, 2 * BLOCK_ROWS, dtype=torch.int8)
        layer.scales = torch.ones(padded, dtype=torch.bfloat16)
        r0 = 0
        for part in rows:
            q, scales = int8_rows(part)
            n = len(part)
            pad = -n % BLOCK_ROWS  # only the last slice may be short of a whole block
            layer.qweight[r0 // BLOCK_ROWS : (r0 + n + pad) // BLOCK_ROWS] = pack_int8_blocks(
                F.pad(q, (0, 0, 0, pad))
            )
            layer.scales[r0 : r0 + n] = scales
            r0 += n
        if r0 != out_features:
            raise ValueError(f"rows add up to {r0}, expected {out_features}")
        layer.out_features, layer.in_features, layer.kernels = out_features, in_features, kernels
        return layer

    @classmethod
    def from_packed(
        cls,
        qweight: torch.Tensor,
        scales: torch.Tensor,
        shape: tuple[int, int],
        max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
    ) -> Int8Linear:
        """A layer (no bias, no dense copy) over the C++ kernels' packed int8 form, taken as it is."""
        kernels = cpu_kernels()
        if kernels is None:
            raise RuntimeError("Int8Linear.from_packed needs the C++ kernels")
        layer = cls.__new__(cls)
        _QuantLinear.__init__(layer, None, None, max_quant_tokens)
        layer.out_features, layer.in_features = shape
        layer.qweight, layer.scales, layer.kernels = qweight, scales, kernels
        return layer

    def _init_int8(
        self,
        q: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None,
        max_quant_tokens: int,
        keep_dense: bool,
    ) -> None:
        kernels = cpu_kernels() if q.shape[1] % INT4_GROUP == 0 else None
        dense = q.float() * scales.float()[:, None] if keep_dense or kernels is None else None
        super().__init__(dense, _bf16(bias), max_quant_tokens)
        self.out_features, self.in_features = q.shape
        if kernels is None:
            self.qweight, self.scales = q.contiguous(), scales  # (out, in), torch's op
        else:
            # The kernels' layout takes whole blocks of 16 rows: zero rows fill the last (a vocabulary of
            # 49,155 costs 13 rows of work) and their outputs are dropped.
            pad = -self.out_features % BLOCK_ROWS
            self.qweight = pack_int8_blocks(F.pad(q, (0, 0, 0, pad)))
            self.scales = F.pad(scales, (0, pad), value=1.0)
        self.kernels = kernels

    def _int_mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.qweight, self.scales)

    def _native_mm(self, x: torch.Tensor) -> torch.Tensor:
        y = self.kernels.q8_linear(x, self.qweight, self.scales)
        return y if y.shape[1] == self.out_features else y[:, : self.out_features].contiguous()

    def _dense_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.round_activations(x)  # the kernels' activation rounding, as for Int4Linear

    def quant_bytes(self) -> int:
        return _nbytes(self.qweight, self.scales)


class Int4Linear(_QuantLinear):
    """Asymmetric 4-bit in groups of 32 along the input: W ≈ q * d + m, q in [0, 15], d and m per group.

    With the C++ kernels, d and m become integers: W ≈ row_scale * (q * k + c), int16 k and c per group,
    one float scale per row, with |q * k + c| <= the kernels' Q4_INT_MAX (8191) for every q, so that a
    run of products sums exactly in int32 (csrc/quant_gemm.h). Rounding d and m to steps of
    row_scale moves a weight by at most 8 * row_scale, 0.1% of its row's largest; SmolLM2's logits moved
    from the file's by 0.024 on average, half as much as with bfloat16 d and m (the torch int4 op's).
    The kernels read q, k and c in blocks of 16 rows (`pack_int4_blocks`, `to_row_blocks`);
    `integer_weights` gives them back as (out, in) and (out, in/32)."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, max_quant_tokens: int, keep_dense: bool = True
    ) -> None:
        out_features, in_features = weight.shape
        if in_features % INT4_GROUP or out_features % BLOCK_ROWS:
            raise ValueError(
                f"int4 needs in_features divisible by {INT4_GROUP} and out_features by {BLOCK_ROWS}, "
                f"got ({out_features}, {in_features})"
            )
        self._init_groups(*int4_requantize(weight), bias, max_quant_tokens, keep_dense)

    @classmethod
    def from_groups(
        cls,
        q: torch.Tensor,
        d: torch.Tensor,
        m: torch.Tensor,
        bias: torch.Tensor | None,
        max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
        keep_dense: bool = False,
    ) -> Int4Linear:
        """A layer of weights q * d + m as a file stores them (gguf_blocks.int4_groups: Q4_0, Q4_1, Q4_K):
        q (out, in) in [0, 15], d and m (out, in/32) float32; no float32 copy of the weights is made
        (unless keep_dense, or where the C++ kernels are unavailable)."""
        out_features, in_features = q.shape
        if (
            in_features % INT4_GROUP
            or out_features % BLOCK_ROWS
            or d.shape != (out_features, in_features // INT4_GROUP)
        ):
            raise ValueError(
                f"int4 groups of shape {tuple(q.shape)} / {tuple(d.shape)} do not fit the layout"
            )
        layer = cls.__new__(cls)
        layer._init_groups(q, d.float(), m.float(), bias, max_quant_tokens, keep_dense)
        return layer

    @classmethod
    def from_packed(
        cls,
        qs: torch.Tensor,
        k: torch.Tensor,
        c: torch.Tensor,
        row_scale: torch.Tensor,
        bias: torch.Tensor | None,
        shape: tuple[int, int],
        max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
    ) -> Int4Linear:
        """A layer over tensors already in the C++ kernels' layout (`native_tensors`, as packed_cache.py
        stores them), taken as they are (memory-mapped ones stay mapped); needs the kernels."""
        kernels = cpu_kernels()
        if kernels is None:
            raise RuntimeError("Int4Linear.from_packed needs the C++ kernels")
        out_features, in_features = shape
        groups = in_features // INT4_GROUP
        if qs.shape != (out_features // BLOCK_ROWS, groups, 256) or row_scale.shape != (out_features,):
            raise ValueError(f"packed int4 tensors {tuple(qs.shape)} do not fit the shape {shape}")
        layer = cls.__new__(cls)
        _QuantLinear.__init__(layer, None, _bf16(bias), max_quant_tokens)
        layer.out_features, layer.in_features, layer.kernels = out_features, in_features, kernels
        layer.qs, layer.k, layer.c, layer.row_scale = qs, k, c, row_scale
        return layer

    def _init_groups(
        self,
        q: torch.Tensor,  # (out, in) uint8 in [0, 15]
        d: torch.Tensor,  # (out, in/32) float32
        m: torch.Tensor,
        bias: torch.Tensor | None,
        max_quant_tokens: int,
        keep_dense: bool,
    ) -> None:
        out_features, in_features = q.shape
        kernels = cpu_kernels()
        super().__init__(None, _bf16(bias), max_quant_tokens)
        self.out_features, self.in_features = out_features, in_features
        self.kernels = kernels
        if kernels is not None:
            # The C++ kernels' layout (csrc/quant_gemm.h): q, k and c in blocks of 16 rows
            # (pack_int4_blocks, to_row_blocks); row_scale (out,).
            k, c, self.row_scale = integer_groups(d, m, kernels.Q4_INT_MAX)
            self.qs = pack_int4_blocks(q)
            self.k, self.c = to_row_blocks(k), to_row_blocks(c)
            if keep_dense:
                groups = q.view(out_features, -1, INT4_GROUP).float()
                ints = groups * k[..., None].float() + c[..., None].float()
                self.dense = (ints * self.row_scale[:, None, None]).view(out_features, in_features)
        else:
            # torch's int4 op: its zero point is the value of q = 8, scale and zero in bfloat16.
            scale_b, zero_b = d.to(torch.bfloat16), (m + 8 * d).to(torch.bfloat16)
            scales_and_zeros = torch.stack([scale_b.t(), zero_b.t()], dim=-1).contiguous()
            groups = q.view(out_features, -1, INT4_GROUP).float()
            dense = (groups - 8) * scale_b.float()[..., None] + zero_b.float()[..., None]
            self.dense = dense.view(out_features, in_features)
            self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 2)
            self.scales_and_zeros = scales_and_zeros  # (in/32, out, 2) bf16

    def _int_mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP, self.scales_and_zeros)

    def integer_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q (out, in) in [0, 15], k and c (out, in/32) int16) of the C++ kernels' form, W = row_scale *
        (q * k + c), read back from their packed layout (for tests and benchmarks)."""
        if self.kernels is None:
            raise RuntimeError("integer_weights: this layer holds torch's int4 form, not the C++ kernels'")
        return unpack_int4_blocks(self.qs), from_row_blocks(self.k), from_row_blocks(self.c)

    def _native_mm(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.q4_linear(x, self.qs, self.k, self.c, self.row_scale, None)

    def _dense_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.round_activations(x)

    def native_tensors(self) -> list[torch.Tensor] | None:
        """(qs, k, c, row_scale, float32 bias or empty) for the C++ forward step; None without the kernels."""
        if self.kernels is None:
            return None
        bias = torch.empty(0) if self.bias is None else self.bias.float().contiguous()
        return [self.qs, self.k, self.c, self.row_scale, bias]

    def quant_bytes(self) -> int:
        if self.kernels is not None:
            return _nbytes(self.qs, self.k, self.c, self.row_scale)
        return _nbytes(self.packed, self.scales_and_zeros)


def _bf16(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.bfloat16)


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
