"""The C++ kernels' data layouts (csrc/quant_gemm.h, csrc/row_vectors.h), in torch ops.

Weights lie in blocks of 16 rows, 4-bit weights in groups of 32 along the input, activations as
integers in [-ACTIVATION_MAX, ACTIVATION_MAX]. These functions pack weights into those layouts, read
them back (for tests and benchmarks), and round activations the way the kernels do.
"""

from __future__ import annotations

import torch

INT4_GROUP = 32
# The C++ kernels' activation range (csrc/quant_gemm.h, kActMax): 15 bits, so that runs of 4-bit
# products sum exactly in int32.
ACTIVATION_MAX = 16383

# Rows per block of the C++ kernels' layouts: a block's rows lie across the lanes of their vectors
# (csrc/row_vectors.h), so every layout below keeps 16 rows' values side by side.
BLOCK_ROWS = 16


def pack_int4_blocks(q: torch.Tensor) -> torch.Tensor:
    """q (out, in), integers in [0, 15], in the C++ kernels' 4-bit layout (csrc/quant_gemm.h): (out/16, in/32,
    256) bytes; in group g of block b, byte 2r + e of 32-byte chunk j holds elements 2j + e (low nibble) and
    2j + 16 + e (high nibble) of the group, for row r of the block."""
    blocks, groups = q.shape[0] // BLOCK_ROWS, q.shape[1] // INT4_GROUP
    # (block, row, group, half, chunk, e): element half * 16 + 2 * chunk + e of the group
    values = q.to(torch.uint8).view(blocks, BLOCK_ROWS, groups, 2, 8, 2)
    nibbles = values[:, :, :, 0] | (values[:, :, :, 1] << 4)  # (block, row, group, chunk, e)
    return nibbles.permute(0, 2, 3, 1, 4).contiguous().view(blocks, groups, 256)


def unpack_int4_blocks(qs: torch.Tensor) -> torch.Tensor:
    """`pack_int4_blocks`' inverse: q (out, in) uint8."""
    blocks, groups, _ = qs.shape
    chunks = qs.view(blocks, groups, 8, BLOCK_ROWS, 2)  # (block, group, chunk, row, e)
    halves = torch.stack([chunks & 0x0F, chunks >> 4], dim=2)  # (block, group, half, chunk, row, e)
    return halves.permute(0, 4, 1, 2, 3, 5).reshape(blocks * BLOCK_ROWS, groups * INT4_GROUP)


def to_row_blocks(values: torch.Tensor) -> torch.Tensor:
    """Per-(row, group) values (out, groups) as the kernels read them: (out/16, groups, 16)."""
    out_features, groups = values.shape
    return values.view(out_features // BLOCK_ROWS, BLOCK_ROWS, groups).transpose(1, 2).contiguous()


def from_row_blocks(values: torch.Tensor) -> torch.Tensor:
    """`to_row_blocks`' inverse: (out, groups)."""
    blocks, groups, _ = values.shape
    return values.transpose(1, 2).reshape(blocks * BLOCK_ROWS, groups)


def pack_int8_blocks(q: torch.Tensor) -> torch.Tensor:
    """int8 weights (out, in) in the C++ head kernel's layout: (out/16, in/2, 32), byte 2r + e of pair p
    holding w[r][2p + e] for row r of the block."""
    blocks, pairs = q.shape[0] // BLOCK_ROWS, q.shape[1] // 2
    values = q.view(blocks, BLOCK_ROWS, pairs, 2)  # (block, row, pair, e)
    return values.permute(0, 2, 1, 3).contiguous().view(blocks, pairs, 2 * BLOCK_ROWS)


Q6_QUAD_BYTES = 96  # 8 inputs x 16 rows at 6 bits (csrc/quant_gemm.h, Q6KWeight)


def pack_q6_blocks(q: torch.Tensor) -> torch.Tensor:
    """6-bit weights q (out, in), integers in [0, 63], in the C++ kernels' Q6_K layout (csrc/quant_gemm.h):
    (out/16, in/8, 96) bytes. For each 4 input pairs of a block (the int8 layout's 4 x 32 bytes), 32 bytes of
    low nibbles of pairs 0 and 1 (pair 1's in the high nibble), 32 of pairs 2 and 3, then 32 of every pair's
    high 2 bits (pair j's at bits 2j)."""
    pairs = pack_int8_blocks(q.to(torch.uint8))  # (blocks, in/2, 32)
    quads = pairs.view(pairs.shape[0], -1, 4, 2 * BLOCK_ROWS)  # (blocks, in/8, pair, byte)
    low, high = quads & 0x0F, quads >> 4
    nibbles_01 = low[:, :, 0] | (low[:, :, 1] << 4)
    nibbles_23 = low[:, :, 2] | (low[:, :, 3] << 4)
    highs = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    return torch.cat([nibbles_01, nibbles_23, highs], dim=-1).contiguous()


def unpack_q6_blocks(packed: torch.Tensor) -> torch.Tensor:
    """`pack_q6_blocks`' inverse: q (out, in) uint8."""
    blocks, quads, _ = packed.shape
    n01, n23, highs = packed[..., :32], packed[..., 32:64], packed[..., 64:]
    low = torch.stack([n01 & 0x0F, n01 >> 4, n23 & 0x0F, n23 >> 4], dim=2)
    high = torch.stack([(highs >> s) & 0x03 for s in (0, 2, 4, 6)], dim=2)
    pairs = (low | (high << 4)).view(blocks, quads * 4, BLOCK_ROWS, 2)  # (block, pair, row, e)
    return pairs.permute(0, 2, 1, 3).reshape(blocks * BLOCK_ROWS, quads * 8)


def quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """x (n, in) float32 rounded as the C++ kernels see it: integers in [-ACTIVATION_MAX, ACTIVATION_MAX]
    with one scale per token, amax / ACTIVATION_MAX.

    The kernels' own `round_activations` in torch ops (x * (1/scale) rounded half to even), for tests
    and for reading; the dense path calls the C++ one (one pass instead of six ops)."""
    scale = x.abs().amax(-1, keepdim=True) / ACTIVATION_MAX
    inv = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    return torch.round(x * inv) * scale
