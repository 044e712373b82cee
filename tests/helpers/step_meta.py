"""Attention metadata for the C++ forward step's tests: decode steps and prompt-chunk steps over
chosen cache slots, built by hand so a test controls every slot."""

from __future__ import annotations

import torch

from llmasos.model.attention import AttentionMetadata


def chunk_meta(contexts: list[torch.Tensor], new_tokens: list[int]) -> AttentionMetadata:
    """A step in which sequence b's context is the cache slots contexts[b], its last new_tokens[b] new."""
    kv_slots = torch.zeros(len(contexts), max(len(c) for c in contexts), dtype=torch.long)
    for b, context in enumerate(contexts):
        kv_slots[b, : len(context)] = context
    q_lens = torch.tensor(new_tokens)
    return AttentionMetadata(
        slot_mapping=torch.cat([c[len(c) - q :] for c, q in zip(contexts, new_tokens, strict=True)]),
        kv_slots=kv_slots,
        query_index=None,
        query_valid=None,
        mask=None,
        context_lens=torch.tensor([len(c) for c in contexts]),
        query_start=torch.cat([torch.zeros(1, dtype=torch.long), q_lens.cumsum(0)]),
    )


def decode_meta(lengths: list[int], block: int) -> AttentionMetadata:
    """One new token for each sequence b, whose context is slots b * block + [0, length]."""
    max_kv = max(lengths) + 1
    kv_slots = torch.zeros(len(lengths), max_kv, dtype=torch.long)
    bias = torch.zeros(len(lengths), 1, 1, max_kv)
    for b, length in enumerate(lengths):
        kv_slots[b, : length + 1] = b * block + torch.arange(length + 1)
        bias[b, ..., length + 1 :] = float("-inf")
    return AttentionMetadata(
        slot_mapping=torch.tensor([b * block + n for b, n in enumerate(lengths)]),
        kv_slots=kv_slots,
        query_index=None,
        query_valid=None,
        mask=None,
        decode=True,
        decode_bias=bias,
    )


def chunk_positions(meta: AttentionMetadata) -> torch.Tensor:
    """Each new token's position in its sequence, for a `chunk_meta` step."""
    lens, starts = meta.context_lens, meta.query_start
    return torch.cat([torch.arange(n - (starts[b + 1] - starts[b]), n) for b, n in enumerate(lens.tolist())])
