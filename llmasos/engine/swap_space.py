"""Swap space: host memory for the KV blocks of sequences suspended in SWAP mode.

Like an operating system's swap area it is allocated in blocks and reused. It grows in chunks on
demand and keeps them, so a swap copies into memory that is already mapped: copying a fresh
2,048-token context into newly allocated memory spent most of its time on page faults. A chunk is
`chunk_blocks` blocks (16) or, where a swap needs more, exactly what it lacks: with chunks of 64 a
context swapped at 2,048 tokens and again at 2,049 (SmolLM2, 128 then 129 blocks) held three chunks,
67.5 MB for 45 MB of KV; now one of 128 blocks and one of 16, 50.6 MB.

Chunks beyond the reserve are given back (`shrink`) when no suspended sequence holds a block of them:
the engine does it when it has nothing left to run, as a server would between loads. Kept, the chunks
of one 2,048-token suspend stayed resident for the process's life (45 MB of SmolLM2's RSS).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from llmasos.model.native import cpu_kernels


@dataclass(frozen=True)
class SwapHandle:
    """Where one sequence's KV waits: swap blocks, in the order of its block table."""

    slots: tuple[tuple[int, int], ...]  # (chunk, block within chunk)
    nbytes: int


class SwapSpace:
    """Host blocks shaped like the KV pool's: (layers, K/V, block_size, kv_heads, head_dim) each."""

    def __init__(
        self,
        block_shape: tuple[int, ...],
        dtype: torch.dtype,
        pin: bool,
        chunk_blocks: int = 16,
        reserve_bytes: int = 0,
    ) -> None:
        self.block_shape = block_shape  # (layers, 2, block_size, kv_heads, head_dim)
        self.dtype = dtype
        self.pin = pin
        self.chunk_blocks = chunk_blocks
        self.reserve_bytes = reserve_bytes
        self._chunks: dict[int, torch.Tensor] = {}  # by id: a slot's chunk id stays valid as others go
        self._next_chunk_id = 0
        self.free_slots: list[tuple[int, int]] = []
        # Touched now, so that the first suspends copy into mapped memory (like a swap partition).
        while self.num_blocks * self.bytes_per_block < reserve_bytes:
            self._grow(self.chunk_blocks)

    @property
    def chunks(self) -> list[torch.Tensor]:
        return list(self._chunks.values())

    @property
    def num_blocks(self) -> int:
        return sum(chunk.shape[2] for chunk in self._chunks.values())

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_slots)

    @property
    def bytes_per_block(self) -> int:
        return torch.Size(self.block_shape).numel() * torch.empty((), dtype=self.dtype).element_size()

    def swap_out(self, kv_blocks: torch.Tensor, block_ids: list[int]) -> SwapHandle:
        """Copy blocks `block_ids` of the pool view `kv_blocks` (layers, 2, blocks, ...) out."""
        if len(self.free_slots) < len(block_ids):
            self._grow(max(self.chunk_blocks, len(block_ids) - len(self.free_slots)))
        slots = tuple(self.free_slots.pop() for _ in block_ids)
        for chunk, pairs in _by_chunk(slots, block_ids).items():
            _copy_blocks(kv_blocks, [b for _, b in pairs], self._chunks[chunk], [i for i, _ in pairs])
        return SwapHandle(slots, len(slots) * self.bytes_per_block)

    def swap_in(self, handle: SwapHandle, kv_blocks: torch.Tensor, block_ids: list[int]) -> None:
        """Copy a handle's blocks back into pool blocks `block_ids`, then free the swap blocks."""
        for chunk, pairs in _by_chunk(handle.slots, block_ids).items():
            _copy_blocks(self._chunks[chunk], [i for i, _ in pairs], kv_blocks, [b for _, b in pairs])
        self.release(handle)

    def release(self, handle: SwapHandle) -> None:
        self.free_slots.extend(handle.slots)

    def shrink(self) -> int:
        """Give back every chunk beyond the reserve none of whose blocks is held, newest first; the
        bytes given back."""
        free_per_chunk: dict[int, int] = defaultdict(int)
        for chunk, _ in self.free_slots:
            free_per_chunk[chunk] += 1
        given = 0
        for chunk_id in sorted(self._chunks, reverse=True):
            chunk = self._chunks[chunk_id]
            size = chunk.shape[2] * self.bytes_per_block
            if free_per_chunk[chunk_id] < chunk.shape[2] or self.num_blocks * self.bytes_per_block - size < (
                self.reserve_bytes
            ):
                continue
            del self._chunks[chunk_id]
            given += size
        if given:
            self.free_slots = [slot for slot in self.free_slots if slot[0] in self._chunks]
        return given

    def _grow(self, num_blocks: int) -> None:
        layers, kv, *rest = self.block_shape
        chunk = torch.empty((layers, kv, num_blocks, *rest), dtype=self.dtype, pin_memory=self.pin)
        chunk.zero_()  # touch every page now, not during a swap
        index = self._next_chunk_id
        self._next_chunk_id += 1
        self._chunks[index] = chunk
        self.free_slots.extend((index, i) for i in reversed(range(num_blocks)))


def _by_chunk(slots: tuple[tuple[int, int], ...], block_ids: list[int]) -> dict[int, list[tuple[int, int]]]:
    """(index in chunk, pool block) pairs, by chunk; pairs beyond the shorter list are dropped."""
    pairs: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for (chunk, index), block_id in zip(slots, block_ids, strict=False):
        pairs[chunk].append((index, block_id))
    return pairs


def _copy_blocks(src: torch.Tensor, src_ids: list[int], dst: torch.Tensor, dst_ids: list[int]) -> None:
    """dst[:, :, dst_ids] = src[:, :, src_ids]. Host to host: one C++ call with streaming stores (a
    2,048-token SmolLM2 context, 94 MB, took ~10 ms each way block by block through torch's copy).
    Between a GPU and the host: one gather, one transfer and one scatter (block by block, 128 strided
    copies of a 2,048-token context took 16 ms each way on an H100)."""
    if src.device.type == dst.device.type == "cpu":
        kernels = cpu_kernels()
        if kernels is not None and src.is_contiguous() and dst.is_contiguous():
            kernels.copy_blocks(src, torch.tensor(src_ids), dst, torch.tensor(dst_ids))
            return
        for s, d in zip(src_ids, dst_ids, strict=True):
            dst[:, :, d].copy_(src[:, :, s])
        return
    gathered = src.index_select(2, torch.tensor(src_ids, device=src.device))
    dst.index_copy_(2, torch.tensor(dst_ids, device=dst.device), gathered.to(dst.device))
