"""Attention over a paged KV cache, for a step that mixes prefill chunks and decode tokens.

A step's new tokens arrive packed: N tokens from B sequences, sequence after sequence. The model
runner describes the step once in `AttentionMetadata` (indices built on the host, shared by every
layer), so each layer costs a fixed handful of tensor ops whatever the mix of sequences:

1. write the new keys/values into their cache slots (`slot_mapping`);
2. gather each sequence's whole context from the cache into a padded (B, T_kv) view (`kv_slots`);
3. gather the packed queries into a padded (B, T_q) view (`query_index`);
4. masked attention (`mask`: causal by absolute position, and only the sequence's own slots);
5. scatter the padded output back to the packed order (`query_valid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionMetadata:
    """Where one step's tokens sit in the paged KV cache. Built by the model runner."""

    slot_mapping: torch.Tensor  # (N,) int64: flat cache slot each new token's K/V is written to
    kv_slots: torch.Tensor  # (B, T_kv) int64: flat slots of each sequence's context, 0-padded
    query_index: torch.Tensor  # (B, T_q) int64: index into the N packed tokens, 0-padded
    query_valid: torch.Tensor  # (B, T_q) bool: which padded query positions are real tokens
    mask: torch.Tensor  # (B, 1, T_q, T_kv) bool: True where a query may attend to a key


def paged_attention(
    q: torch.Tensor,  # (N, n_heads, head_dim)
    k: torch.Tensor,  # (N, n_kv_heads, head_dim)
    v: torch.Tensor,  # (N, n_kv_heads, head_dim)
    k_cache: torch.Tensor,  # (num_slots, n_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_slots, n_kv_heads, head_dim)
    meta: AttentionMetadata,
) -> torch.Tensor:  # (N, n_heads * head_dim)
    """Store this step's keys/values in the cache and attend over each sequence's full context."""
    k_cache.index_copy_(0, meta.slot_mapping, k)
    v_cache.index_copy_(0, meta.slot_mapping, v)
    keys = k_cache[meta.kv_slots].transpose(1, 2)  # (B, n_kv_heads, T_kv, head_dim)
    values = v_cache[meta.kv_slots].transpose(1, 2)
    queries = q[meta.query_index].transpose(1, 2)  # (B, n_heads, T_q, head_dim)
    out = F.scaled_dot_product_attention(
        queries, keys, values, attn_mask=meta.mask, enable_gqa=q.shape[1] != k.shape[1]
    )  # (B, n_heads, T_q, head_dim)
    out = out.transpose(1, 2)[meta.query_valid]  # (N, n_heads, head_dim), packed order
    return out.flatten(1)
