"""Weight formats: which one an engine runs (`resolve_weight_format`) and the layer that holds it
(`make_linear`); the layers themselves are in quant_linear.py."""

from __future__ import annotations

import torch
from torch import nn

from llmasos.model.block_layout import BLOCK_ROWS, INT4_GROUP
from llmasos.model.quant_linear import DEFAULT_MAX_QUANT_TOKENS, DenseLinear, Int4Linear, Int8Linear

WEIGHT_FORMATS = ("auto", "float32", "bfloat16", "int8", "int4")


def resolve_weight_format(weight_format: str, device: torch.device) -> str:
    """The concrete format for `auto`: int4 on CPU, the model's own dtype elsewhere.

    Why int4 on CPU (AVX2 EPYC, SmolLM2-135M, see benchmarks/decode_paths.py): it reads the fewest
    bytes per token (95 MB vs int8's 135 MB and fp32's 538 MB), its one-token kernel was 1.2-2.7x
    faster than int8pack's per layer, so its batch-1 decode was the fastest, while prefill and
    batch-32 take the same dense fp32 path in every format. Its greedy text kept fp32's on more
    prompts than int8 did, because it reproduces the Q4_1 file's own 4-bit groups. bfloat16 is
    never chosen on CPUs without native bf16 (AVX2): its GEMMs are emulated and 2-10x slower than
    fp32 at 4+ tokens. On CUDA the int ops are not wired up, so "auto" keeps dense weights.
    """
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight_format {weight_format!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    if weight_format == "auto":
        return "int4" if device.type == "cpu" else "native"
    return weight_format


def make_linear(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    weight_format: str,
    *,
    max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
    keep_dense: bool = True,
) -> nn.Module:
    """A linear layer holding `weight` (out, in) in `weight_format` (already resolved, not "auto")."""
    if weight_format == "native":
        return DenseLinear(weight, bias)
    if weight_format in ("float32", "bfloat16"):
        dtype = getattr(torch, weight_format)
        return DenseLinear(weight.to(dtype), None if bias is None else bias.to(dtype))
    if weight_format not in ("int4", "int8"):
        raise ValueError(f"unknown weight_format {weight_format!r}")
    # int8 also serves shapes int4's packing cannot take.
    int4_fits = weight.shape[1] % INT4_GROUP == 0 and weight.shape[0] % BLOCK_ROWS == 0
    kind = Int4Linear if weight_format == "int4" and int4_fits else Int8Linear
    if weight.device.type != "cpu":  # int ops are CPU-only here (quant_linear.py says why)
        dense = kind(weight.cpu(), None, 0).dense
        return DenseLinear(dense.to(weight.device, torch.bfloat16), bias)
    return kind(weight, bias, max_quant_tokens, keep_dense)
