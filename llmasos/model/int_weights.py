"""Integer forms of float weights, as the int layers (quant_linear.py, group_linear.py) hold them: 4-bit
groups of 32 (`int4_requantize`), their integer constants for the C++ kernels (`integer_groups`), 8-bit
groups of 16 (`int8_group_requantize`) and per-row int8 (`int8_rows`)."""

from __future__ import annotations

import torch

from llmasos.model.block_layout import INT4_GROUP


def int4_requantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q (out, in) uint8 in [0, 15], d, m (out, in/32) float32) of a float weight: each group of 32 on
    16 even steps from its minimum to its maximum (a dequantized Q4_1 or Q4_0 group gives back its own q,
    d and m; other formats lose what 4 bits cannot hold)."""
    out_features, in_features = weight.shape
    groups = weight.float().view(out_features, in_features // INT4_GROUP, INT4_GROUP)
    lo, hi = groups.amin(-1), groups.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((groups - lo[..., None]) / scale[..., None]).clamp(0, 15)
    return q.to(torch.uint8).view(out_features, in_features), scale, lo


def int8_group_requantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q (out, in) int8, d, m (out, in/16) float32) of a float weight (F16, BF16, F32 tensors): symmetric
    groups of 16, d = the group's largest |w| / 127, m = 0; a weight moves by at most d / 2."""
    out_features, in_features = weight.shape
    groups = weight.float().view(out_features, in_features // 16, 16)
    d = groups.abs().amax(-1) / 127
    q = torch.round(groups / torch.where(d > 0, d, 1)[..., None]).clamp(-127, 127)
    return q.to(torch.int8).view(out_features, in_features), d, torch.zeros_like(d)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 of a float weight: (q (out, in) int8, scales (out,) bfloat16), W ≈ q * s."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales.to(torch.bfloat16)  # the kernel wants scales in the activation dtype


def integer_groups(
    d: torch.Tensor, m: torch.Tensor, int_max: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer group constants for weights q * d + m (q in [0, 15]; d, m (out, groups) float32).

    Returns int16 k, c (out, groups) and float32 row_scale (out,) with |q * k + c| <= int_max for every q:
    the row's largest |weight| maps to int_max - 8, which leaves room for rounding k (7.5 at q = 15) and c."""
    largest = torch.maximum(m.abs(), (15 * d + m).abs()).amax(-1)
    row_scale = torch.where(largest > 0, largest / (int_max - 8), torch.ones_like(largest))
    k = torch.round(d / row_scale[:, None])
    c = torch.round(m / row_scale[:, None])
    worst = torch.maximum(c.abs(), (15 * k + c).abs()).max()
    assert worst <= int_max, f"int4 group constants reach {worst}, beyond {int_max}"
    return k.to(torch.int16).contiguous(), c.to(torch.int16).contiguous(), row_scale.contiguous()
