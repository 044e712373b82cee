"""An embedding table kept in GGUF's Q8_0 form where that form is exact (1.125 bytes a value), or in
Q6_K's integers with a scale per 16 (1.25 bytes a value)."""

from __future__ import annotations

import mmap

import torch
from torch import nn

Q8_BLOCK = 32


class Q8Embedding(nn.Module):
    """An embedding table held as GGUF's Q8_0 holds it: int8 in blocks of 32, a float32 scale each.

    Built (`from_dense`) only where that form reproduces the loaded float32 table exactly, as for a file
    that ships its embedding in Q8_0 (both SmolLM2 files do): a lookup returns the same float32 rows as
    the dense table, from 1.125 bytes a value instead of 4 (32 MB instead of 113 MB for SmolLM2). The
    table is read one row per token, so the dequantizing costs nothing that shows."""

    ROWS_PER_CHECK = 4096  # rows converted at a time: the check's float temporaries stay ~10 MB

    def __init__(self, q: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__()
        self.q = q  # (vocab, dim) int8
        self.scales = scales  # (vocab, dim / block) float32
        # Values per scale: 32 for Q8_0; 16 for Q6_K's tables, held exactly the same way
        # (gguf_blocks.int8_groups).
        self.block = q.shape[1] // scales.shape[1]

    @classmethod
    def from_dense(cls, weight: torch.Tensor) -> Q8Embedding | None:
        """`weight` in Q8_0 form if every block of 32 is exactly an int8 vector times max|w| / 127 (how
        Q8_0 quantizes, so a dequantized Q8_0 table passes); None where any block is not (a float or
        otherwise quantized table stays dense)."""
        if weight.dtype != torch.float32 or weight.dim() != 2 or weight.device.type != "cpu":
            return None
        vocab, dim = weight.shape
        if dim % Q8_BLOCK:
            return None
        q = torch.empty(vocab, dim, dtype=torch.int8)
        scales = torch.empty(vocab, dim // Q8_BLOCK)
        for r0 in range(0, vocab, cls.ROWS_PER_CHECK):
            blocks = weight[r0 : r0 + cls.ROWS_PER_CHECK].detach().reshape(-1, dim // Q8_BLOCK, Q8_BLOCK)
            scale = blocks.abs().amax(-1) / 127
            ints = torch.round(blocks / torch.where(scale > 0, scale, torch.ones_like(scale))[..., None])
            if not torch.equal(ints * scale[..., None], blocks):
                return None
            q[r0 : r0 + len(blocks)] = ints.to(torch.int8).view(len(blocks), dim)
            scales[r0 : r0 + len(blocks)] = scale
        return cls(q, scales)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (...,) -> (..., dim) float32
        rows = self.q[input_ids].unflatten(-1, (-1, self.block)).float() * self.scales[input_ids].unsqueeze(
            -1
        )
        return rows.flatten(-2)

    def bytes_per_token(self) -> int:
        """Bytes one token's lookup reads: its row and the row's scales."""
        return self.q.shape[1] * self.q.element_size() + self.scales.shape[1] * self.scales.element_size()


class Int4Embedding(nn.Module):
    """An embedding table held as a 4-bit file holds it (Q4_0, Q4_1, Q4_K): q in [0, 15] two to a byte,
    and d and m per group of 32, values q * d + m (0.75 bytes a value).

    Why: Qwen2.5-1.5B ships its table in Q4_K; as float32 it was 933 MB of the model's 2 GB, here 175 MB.
    A lookup returns exactly the file's values (one row per token, so unpacking costs nothing that shows).
    """

    def __init__(self, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> None:
        super().__init__()
        self.packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()  # (vocab, dim / 2) uint8
        self.d, self.m = d.contiguous(), m.contiguous()  # (vocab, dim / 32) float32

    @classmethod
    def from_packed(cls, packed: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> Int4Embedding:
        """The table from its packed form (`packed`, `d`, `m` as this class holds them), taken as it is."""
        table = cls.__new__(cls)
        nn.Module.__init__(table)
        table.packed, table.d, table.m = packed, d, m
        return table

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (...,) -> (..., dim) float32
        rows = self.packed[input_ids]
        q = torch.stack([rows & 0x0F, rows >> 4], dim=-1).flatten(-2)  # (..., dim) in [0, 15]
        groups = q.unflatten(-1, (-1, Q8_BLOCK)).float()
        return (groups * self.d[input_ids].unsqueeze(-1) + self.m[input_ids].unsqueeze(-1)).flatten(-2)

    def bytes_per_token(self) -> int:
        """Bytes one token's lookup reads: its packed row and the row's d and m."""
        return self.packed.shape[1] + 2 * self.d.shape[1] * self.d.element_size()


def untouched_zeros(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A zero tensor in anonymous memory that is never written: reading it maps the kernel's one shared
    zero page, so it adds nothing to the process's RSS however large it is (`torch.zeros` writes every
    byte). For kernel operands that must exist but are all zero."""
    count = torch.Size(shape).numel()
    # Private: Python's default for anonymous maps is MAP_SHARED, whose pages are shared memory that a
    # read makes resident (64 MB read added 68 MB of RSS); a private map reads the zero page.
    size = max(count * torch.empty((), dtype=dtype).element_size(), 1)
    pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(pages, dtype=dtype, count=count).view(shape)


class HeadRowsEmbedding(nn.Module):
    """The lookup table read from the LM head that holds the same table (a tied Q8_0 embedding kept once,
    as 8-bit groups: group_linear.Int8GroupLinear with every m zero), in the head kernels' layout.

    Why: Gemma 3's 262,144 x 640 table was held twice, as a Q8Embedding (189 MB) and as a per-row int8
    head (168 MB). The 8-bit-group head is the file's Q8_0 values exactly (q and d, d repeated per 16) and
    ran as fast as the per-row head, so the table is 210 MB once; a lookup gathers one row's q and d."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.q = head.q  # (vocab / 16, dim / 2, 32) int8: byte 2r + e of pair p is w[r][2p + e]
        self.d = head.d  # (vocab / 16, dim / 16, 16) float32: d[b, g, r] of row 16 b + r, group g

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, dim) float32
        blocks, row = input_ids // 16, input_ids % 16
        pairs = torch.stack([2 * row, 2 * row + 1], dim=-1)  # (N, 2): the row's two bytes of each pair
        q = self.q[blocks].gather(2, pairs[:, None, :].expand(-1, self.q.shape[1], 2))  # (N, dim / 2, 2)
        d = self.d[blocks].gather(2, row[:, None, None].expand(-1, self.d.shape[1], 1))  # (N, groups, 1)
        return (q.reshape(len(input_ids), self.d.shape[1], -1).float() * d).flatten(1)

    def bytes_per_token(self) -> int:
        """Bytes one token's lookup reads: its row of q and the row's d."""
        return self.q.shape[1] * 2 + self.d.shape[1] * self.d.element_size()
