"""GGUF's Q6_K blocks written by hand (gguf-py reads them but cannot quantize to them).

A super-block of 256 weights is ql[128] (low 4 bits), qh[64] (high 2 bits), 16 int8 scales (one per 16
weights) and an fp16 d: w = d * sc * (q - 32), q in [0, 63] (llama.cpp's block_q6_K). `encode_q6_k` lays
out given q, sc and d; `quantize_q6_k` picks them for float weights (a plain absmax choice, not llama.cpp's
search: the tests need valid blocks, not the best ones).
"""

from __future__ import annotations

import numpy as np


def encode_q6_k(q: np.ndarray, sc: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Raw Q6_K bytes (rows, cols / 256 * 210) of q (rows, cols) in [0, 63], sc (rows, cols/16) int8 and d
    (rows, cols/256) float16."""
    rows, cols = q.shape
    nb = cols // 256
    # (row, block, half, quarter, l): element 128 half + 32 quarter + l of the block
    quarters = q.astype(np.uint8).reshape(rows, nb, 2, 4, 32)
    low, high = quarters & 0x0F, quarters >> 4
    chunks = [low[:, :, :, c] | (low[:, :, :, c + 2] << 4) for c in (0, 1)]
    ql = np.stack(chunks, axis=3)
    qh = high[:, :, :, 0] | (high[:, :, :, 1] << 2) | (high[:, :, :, 2] << 4) | (high[:, :, :, 3] << 6)
    blocks = np.concatenate(
        [
            ql.reshape(rows, nb, 128),
            qh.reshape(rows, nb, 64),
            sc.astype(np.int8).reshape(rows, nb, 16).view(np.uint8),
            d.astype(np.float16).reshape(rows, nb, 1).view(np.uint8),
        ],
        axis=-1,
    )
    return np.ascontiguousarray(blocks.reshape(rows, nb * 210))


def quantize_q6_k(values: np.ndarray) -> np.ndarray:
    """Raw Q6_K bytes of float32 weights (rows, cols), cols a multiple of 256."""
    rows, cols = values.shape
    groups = values.reshape(rows, cols // 256, 16, 16)
    group_scale = np.abs(groups).max(-1) / 31  # (row, block, group): |q - 32| <= 31
    d = (group_scale.max(-1) / 127).astype(np.float16)  # (row, block)
    safe_d = np.where(d == 0, 1, d).astype(np.float32)
    sc = np.clip(np.rint(group_scale / safe_d[..., None]), -127, 127).astype(np.int8)
    step = d.astype(np.float32)[..., None] * sc  # (row, block, group)
    safe_step = np.where(step == 0, 1, step)
    q = np.clip(np.rint(groups / safe_step[..., None]) + 32, 0, 63)
    return encode_q6_k(q.reshape(rows, cols), sc.reshape(rows, -1), d)


def random_q6_k(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Raw Q6_K bytes of random blocks: q over its whole range, sc of either sign, small positive d."""
    q = rng.integers(0, 64, size=(rows, cols), dtype=np.uint8)
    sc = rng.integers(-128, 128, size=(rows, cols // 16)).astype(np.int8)
    d = rng.uniform(0.0005, 0.002, size=(rows, cols // 256)).astype(np.float16)
    return encode_q6_k(q, sc, d)
