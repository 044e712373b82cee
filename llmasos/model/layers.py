"""Building blocks of the Llama family: RMSNorm, rotary embeddings, linear layers, SwiGLU."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmasos.model.config import RopeScaling


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (no mean subtraction, no bias), computed in float32.

    Its output has the dtype of its weights where they are half precision (the next matmul's
    input), else of its input: a float32 residual stream feeds bfloat16 projections."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:  # one fused kernel instead of six ops
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        out_dtype = x.dtype if self.weight.dtype == torch.float32 else self.weight.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(out_dtype)


class Linear(nn.Module):
    """y = x Wᵀ + b. Its own class so that quantized weight formats can replace it later."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU on a fused [gate | up] projection: silu(gate) * up."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, with linear or llama3 scaling applied."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling.type == "linear":
        inv_freq = inv_freq / scaling.factor
    elif scaling.type == "llama3":
        # Long wavelengths are divided by the factor, short ones kept, and the band between
        # is interpolated smoothly (Llama 3.1's recipe).
        low_wavelen = scaling.original_context_length / scaling.low_freq_factor
        high_wavelen = scaling.original_context_length / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        smooth = (scaling.original_context_length / wavelen - scaling.low_freq_factor) / (
            scaling.high_freq_factor - scaling.low_freq_factor
        )
        scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
        is_mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
        inv_freq = torch.where(is_mid, (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq, scaled)
    return inv_freq.float()


def rope_cos_sin(inv_freq: torch.Tensor, max_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and *signed* sin tables, (max_positions, head_dim), in the "rotate half" layout.

    The sin table's first half is negated so that rotate_half(x) * sin == roll(x) * signed_sin:
    `apply_rope` is then three ops instead of six.
    """
    return rope_rows(inv_freq, torch.arange(max_positions, dtype=torch.float32))


def rope_rows(inv_freq: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows `positions` (N,) of `rope_cos_sin`'s tables, (N, head_dim) each, computed from the positions
    alone: the same float32 products, cos and sin, so the same bits as the whole tables' rows (a model that
    computes them per step holds no tables: Gemma 3's two were 134 MB for its 32,768 positions)."""
    angles = positions.to(torch.float32)[:, None] * inv_freq  # (N, head_dim / 2)
    sin = angles.sin()
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), torch.cat([-sin, sin], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (N, heads, head_dim) by per-token tables (N, 1 or heads, head_dim) from `rope_cos_sin`."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)
