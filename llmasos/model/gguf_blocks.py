"""GGUF's quantized blocks read as stored, without a float32 copy of the tensor.

The 4-bit formats (Q4_0, Q4_1, Q4_K) are all "q * d + m" over groups of 32 consecutive weights of a
row, q in [0, 15]: Q4_0 has m = -8 d, Q4_1 ships d and m per block of 32, and Q4_K's super-blocks
of 256 carry 8 sub-blocks of 32 whose d and m are the super-block's fp16 scale and minimum times
6-bit integers. That is exactly the engine's int4 layout (Int4Linear: q, then d and m per group of
32), so these tensors convert with the file's own q, d and m: no re-quantization.

The 8-bit-exact formats (Q8_0, Q6_K) are "q * d" with q small integers and d per group (32 for
Q8_0, 16 for Q6_K): they convert to int8 with a scale per group (`int8_groups`), exactly, for the
embedding table.

Every block format, 4-bit or more, is also "q * d + m" over groups of 16 with q in int8
(`int8_group_values`): the engine's 8-bit grouped layout (group_linear.Int8GroupLinear), which computes
Q5_0, Q5_1, Q5_K, Q6_K and Q8_0 projections as stored rather than re-quantized to 4 bits.

Q6_K tensors a projection holds alone (Qwen2.5's ffn_down, its LM head) keep their 6-bit q, int8 sub-block
scales and fp16 super-block scale (`q6k_blocks`, q6k_linear.Q6KLinear): 6.6 bits a weight where the 8-bit
groups take 12.

Everything else is dequantized with gguf-py a slice of rows at a time (`dequantize_rows`), so no
step holds more than a slice of float32 values.
"""

from __future__ import annotations

from collections.abc import Iterator

import gguf
import numpy as np
import torch

from llmasos.errors import ModelFormatError, UnsupportedModelError

Q = gguf.GGMLQuantizationType
INT4_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q4_K)
INT8_GROUP_TYPES = {Q.Q8_0: 32, Q.Q6_K: 16}
# Every format `int8_group_values` reads as stored (the rest are re-quantized from their float values).
EIGHT_BIT_TYPES = (Q.Q5_0, Q.Q5_1, Q.Q5_K, Q.Q6_K, Q.Q8_0)  # more than 4 bits a weight: held in 8
BLOCK_TYPES = (*INT4_TYPES, *EIGHT_BIT_TYPES)
SUB_GROUP = 16  # inputs per d and m of the 8-bit grouped layout
# Rows dequantized at a time: a slice of a 1,536-wide matrix is 25 MB of float32.
ROWS_PER_SLICE = 4096


def tensor_shape(tensor: gguf.ReaderTensor) -> tuple[int, ...]:
    """The tensor's shape in torch's order (GGUF lists dims innermost first)."""
    return tuple(int(d) for d in reversed(tensor.shape))


def _row_blocks(tensor: gguf.ReaderTensor) -> np.ndarray:
    """The raw bytes as (rows, blocks per row, bytes per block) uint8, a view of the memory map."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[tensor.tensor_type]
    rows, cols = tensor_shape(tensor)
    if cols % block_size:
        raise ModelFormatError(f"tensor {tensor.name} has rows of {cols}, not whole blocks of {block_size}")
    data = np.asarray(tensor.data).view(np.uint8)
    if data.size != rows * cols // block_size * type_size:
        raise ModelFormatError(f"tensor {tensor.name} is truncated ({data.size} bytes)")
    return data.reshape(rows, cols // block_size, type_size)


def _f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The fp16 at byte `offset` of every block, as float32 (..., 1)."""
    return blocks[..., offset : offset + 2].copy().view(np.float16).astype(np.float32)


def _nibbles_32(qs: np.ndarray) -> np.ndarray:
    """16 bytes per group -> 32 values: low nibbles are elements 0-15, high nibbles 16-31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def int4_groups(
    tensor: gguf.ReaderTensor, rows: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q (out, in) uint8 in [0, 15], d and m (out, in/32) float32) with weights q * d + m, read from a
    Q4_0, Q4_1 or Q4_K tensor's blocks as stored (its `rows` only, to bound the temporaries)."""
    blocks = _row_blocks(tensor)[rows]
    rows = blocks.shape[0]
    kind = tensor.tensor_type
    if kind == Q.Q4_0:  # d, qs[16]; w = d (q - 8)
        d = _f16(blocks, 0)[..., 0]
        q, m = _nibbles_32(blocks[..., 2:]), -8 * d
    elif kind == Q.Q4_1:  # d, m, qs[16]; w = d q + m
        d, m = _f16(blocks, 0)[..., 0], _f16(blocks, 2)[..., 0]
        q = _nibbles_32(blocks[..., 4:])
    elif kind == Q.Q4_K:  # d, dmin, scales[12], qs[128]; sub-block j: w = d sc_j q - dmin m_j
        flat = blocks.reshape(-1, blocks.shape[-1])
        super_d, super_min = _f16(flat, 0), _f16(flat, 2)
        sc, mins = gguf.quants.Q4_K.get_scale_min(flat[:, 4:16])
        d = (super_d * sc.astype(np.float32)).reshape(rows, -1)
        m = -(super_min * mins.astype(np.float32)).reshape(rows, -1)
        # 4 chunks of 32 bytes: sub-block 2c is chunk c's low nibbles, 2c + 1 its high ones
        qs = flat[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
        q = (qs & 0x0F).reshape(rows, -1, 32)
    else:
        raise ValueError(f"{kind.name} is not a 4-bit group format")
    return (
        torch.from_numpy(np.ascontiguousarray(q).reshape(rows, -1)),
        torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32).reshape(rows, -1)),
        torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32).reshape(rows, -1)),
    )


def int8_groups(tensor: gguf.ReaderTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q (out, in) int8, scales (out, in/group) float32) with weights q * scale, from a Q8_0 (groups of
    32) or Q6_K (groups of 16) tensor, exactly: both formats are small integers times a scale per group."""
    kind = tensor.tensor_type
    rows, cols = tensor_shape(tensor)
    if kind == Q.Q8_0:  # d, qs[32] int8
        blocks = _row_blocks(tensor)
        scales = _f16(blocks, 0)[..., 0]
        q = blocks[..., 2:].view(np.int8).reshape(rows, cols)
        return torch.from_numpy(np.ascontiguousarray(q)), torch.from_numpy(np.ascontiguousarray(scales))
    if kind != Q.Q6_K:
        raise ValueError(f"{kind.name} is not an 8-bit group format")
    q = torch.empty(rows, cols, dtype=torch.int8)
    scales = torch.empty(rows, cols // 16)
    blocks = _row_blocks(tensor)  # ql[128], qh[64], scales[16] int8, d
    for r0 in range(0, rows, ROWS_PER_SLICE):
        part = blocks[r0 : r0 + ROWS_PER_SLICE]
        n = part.shape[0]
        sub = (_f16(part, 208) * part[..., 192:208].view(np.int8).astype(np.float32)).reshape(n, -1)
        values = gguf.quants.dequantize(part.reshape(n, -1), kind)  # d sc (q - 32), exact products
        safe = np.where(sub == 0, 1, sub)
        ints = np.rint(values.reshape(n, -1, 16) / safe[..., None])
        q[r0 : r0 + n] = torch.from_numpy(ints.astype(np.int8).reshape(n, cols))
        scales[r0 : r0 + n] = torch.from_numpy(sub)
    return q, scales


def int8_group_values(
    tensor: gguf.ReaderTensor, rows: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q (out, in) int8, d and m (out, in/16) float32) with weights q * d + m exactly as the file means
    them, for every format in BLOCK_TYPES (its `rows` only).

    d and m come from each block's header; q is read back from gguf-py's dequantized values as
    (w - m) / d rounded, which is exact: w is d q + m up to one float rounding, far below half a step."""
    kind = tensor.tensor_type
    if kind in INT4_TYPES:
        q, d, m = int4_groups(tensor, rows)
        return q.to(torch.int8), d.repeat_interleave(2, 1), m.repeat_interleave(2, 1)
    blocks = _row_blocks(tensor)[rows]
    if kind == Q.Q8_0:  # d, qs[32] int8
        d = np.repeat(_f16(blocks, 0)[..., 0], 2, axis=-1)
        q = blocks[..., 2:].view(np.int8).reshape(blocks.shape[0], -1)
        return _int8_groups_tensors(q, d, np.zeros_like(d))
    d, m = _group_scales(blocks, kind)
    n = blocks.shape[0]
    values = gguf.quants.dequantize(blocks.reshape(n, -1), kind).reshape(n, -1, SUB_GROUP)
    safe = np.where(d == 0, 1, d)
    q = np.clip(np.rint((values - m[..., None]) / safe[..., None]), -128, 127).astype(np.int8)
    return _int8_groups_tensors(q.reshape(n, -1), d, m)


def q6k_blocks(
    tensor: gguf.ReaderTensor, rows: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q (out, in) uint8 in [0, 63], sc (out, in/16) int8, dsup (out, in/256) float32) of a Q6_K tensor's
    `rows`, the weights being dsup * sc * (q - 32): the file's bits as stored, read without a float copy."""
    if tensor.tensor_type != Q.Q6_K:
        raise ValueError(f"{tensor.name} is {tensor.tensor_type.name}, not Q6_K")
    blocks = _row_blocks(tensor)[rows]  # ql[128], qh[64], scales[16] int8, d
    n, per_row = blocks.shape[:2]
    # In each half of 128 elements, quarter k (32 elements) is the low (k < 2) or high nibbles of ql's
    # chunk k % 2, with bits 2k and 2k + 1 of qh above them (llama.cpp's dequantize_row_q6_K).
    ql = blocks[..., :128].reshape(n, per_row, 2, 2, 32)[:, :, :, [0, 1, 0, 1]]
    qh = blocks[..., 128:192].reshape(n, per_row, 2, 1, 32)
    low = (ql >> _Q6_LOW_SHIFTS) & 0x0F
    high = (qh >> _Q6_HIGH_SHIFTS) & 0x03
    q = (low | (high << 4)).reshape(n, -1)
    sc = blocks[..., 192:208].view(np.int8).reshape(n, -1)
    dsup = _f16(blocks, 208)[..., 0]
    return (
        torch.from_numpy(np.ascontiguousarray(q)),
        torch.from_numpy(np.ascontiguousarray(sc)),
        torch.from_numpy(np.ascontiguousarray(dsup, dtype=np.float32)),
    )


_Q6_LOW_SHIFTS = np.array([0, 0, 4, 4], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
_Q6_HIGH_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)


def _group_scales(blocks: np.ndarray, kind: Q) -> tuple[np.ndarray, np.ndarray]:
    """d and m (rows, in/16) of a Q5_0, Q5_1, Q5_K or Q6_K tensor's blocks, from their headers."""
    n = blocks.shape[0]
    if kind == Q.Q5_0:  # d, qh[4], qs[16]; w = d (q - 16)
        d = _f16(blocks, 0)[..., 0]
        d, m = d, -16 * d
    elif kind == Q.Q5_1:  # d, m, qh[4], qs[16]; w = d q + m
        d, m = _f16(blocks, 0)[..., 0], _f16(blocks, 2)[..., 0]
    elif kind == Q.Q5_K:  # d, dmin, scales[12], qh[32], qs[128]; sub-block j of 32: w = d sc_j q - dmin m_j
        flat = blocks.reshape(-1, blocks.shape[-1])
        sc, mins = gguf.quants.Q4_K.get_scale_min(flat[:, 4:16])
        d = (_f16(flat, 0) * sc.astype(np.float32)).reshape(n, -1)
        m = -(_f16(flat, 2) * mins.astype(np.float32)).reshape(n, -1)
    elif kind == Q.Q6_K:  # ql[128], qh[64], scales[16] int8, d; sub-block j of 16: w = d sc_j (q - 32)
        d = (_f16(blocks, 208) * blocks[..., 192:208].view(np.int8).astype(np.float32)).reshape(n, -1)
        return d, np.zeros_like(d)
    else:
        raise ValueError(f"{kind.name} is not a block format")
    return np.repeat(d, 2, axis=-1), np.repeat(m, 2, axis=-1)  # per 32 -> per 16


def _int8_groups_tensors(
    q: np.ndarray, d: np.ndarray, m: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(q, dtype=np.int8)),
        torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)),
    )


def dequantize_rows(
    tensor: gguf.ReaderTensor, rows_per_slice: int = ROWS_PER_SLICE
) -> Iterator[torch.Tensor]:
    """The tensor as float32 (rows, cols) slices of at most `rows_per_slice` rows, in order."""
    shape = tensor_shape(tensor)
    rows = shape[0] if len(shape) > 1 else 1
    data = np.asarray(tensor.data)
    data = data.reshape(rows, -1)
    for r0 in range(0, rows, rows_per_slice):
        part = data[r0 : r0 + rows_per_slice]
        try:
            if tensor.tensor_type == Q.F32:
                values = np.array(part, dtype=np.float32)
            else:
                values = gguf.quants.dequantize(part, tensor.tensor_type)
        except NotImplementedError as err:
            raise UnsupportedModelError(
                f"tensor {tensor.name} uses quantization {tensor.tensor_type.name}, which cannot be "
                "dequantized; convert the model to F16, Q8_0, Q4_K or Q6_K"
            ) from err
        except ValueError as err:
            raise ModelFormatError(f"tensor {tensor.name} is corrupt or truncated ({err})") from err
        yield torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(len(part), -1)


def dequantize(tensor: gguf.ReaderTensor) -> torch.Tensor:
    """The whole tensor as float32 in its torch shape (for one projection or a norm, never the model)."""
    return torch.cat(list(dequantize_rows(tensor))).reshape(tensor_shape(tensor))
