"""Attention over a paged KV cache, for a step that mixes prefill chunks and decode tokens.

A step's new tokens arrive packed: N tokens from B sequences, sequence after sequence. The model
runner describes the step once in `AttentionMetadata` (indices built on the host, shared by every
layer), so each layer costs a fixed handful of tensor ops whatever the mix of sequences:

1. write the new keys/values into their cache slots (`slot_mapping`);
2. gather each sequence's whole context from the cache into a padded (B, T_kv) view (`kv_slots`);
3. gather the packed queries into a padded (B, T_q) view (`query_index`);
4. masked attention (`mask`: causal by absolute position, and only the sequence's own slots);
5. scatter the padded output back to the packed order (`out_index`, else `query_valid`).

On CPU with the C++ kernels, steps with prompt chunks skip 2-5 as well: `prefill_attention`
(csrc/prefill_attention.cpp) reads each sequence's keys and values where they lie, block by block, and
never scores a key block that lies wholly after a query block (SDPA with a padded mask scores every
pair: 0.49 s of a 2.0 s 1,024-token prefill, against 0.29 s for the kernel).

Decode steps (every sequence has exactly one new token, the common case) skip 3-5: the N == B
queries are already one per sequence, and a grouped matmul (queries viewed as (B, kv_heads,
group, D) against (B, kv_heads, D, T) keys) is much faster than SDPA for a one-row query (SDPA
was 57% of a batch-32 decode step). Queries arrive pre-scaled by 1/sqrt(head_dim) (folded into
the model's RoPE tables), so neither path scales again. On CPU with the C++ kernels (native.py) and
`context_lens` given, decode steps skip the gather (2) as well: the kernel reads each sequence's keys
and values where they lie (the padded copy was most of a 32-sequence step's attention time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from llmasos.model.native import cpu_kernels


@dataclass(frozen=True)
class AttentionMetadata:
    """Where one step's tokens sit in the paged KV cache. Built by the model runner."""

    slot_mapping: torch.Tensor  # (N,) int64: flat cache slot each new token's K/V is written to
    kv_slots: torch.Tensor  # (B, T_kv) int64: flat slots of each sequence's context, 0-padded
    query_index: torch.Tensor | None  # (B, T_q) int64: index into the N packed tokens, 0-padded
    query_valid: torch.Tensor | None  # (B, T_q) bool: which padded query positions are real tokens
    mask: torch.Tensor | None  # (B, 1, T_q, T_kv) bool: True where a query may attend to a key
    # Decode steps: every sequence has one new token, token i belongs to sequence i.
    decode: bool = False
    # Decode steps: (B, 1, 1, T_kv) additive mask (0 or -inf) for padded keys; None when no padding.
    decode_bias: torch.Tensor | None = None
    # (N,) int64: row of each packed token in the flattened (B * T_q) padded output; avoids
    # boolean-mask indexing (which syncs on CUDA). None falls back to `query_valid`.
    out_index: torch.Tensor | None = None
    # (B,) int64 context length of each sequence (its new tokens included); lets the C++ kernels
    # attend to each sequence's own slots instead of gathering a padded copy of every context.
    context_lens: torch.Tensor | None = None
    # Steps with prompt chunks: (B + 1,) int64 offsets of each sequence's tokens in the packed N.
    query_start: torch.Tensor | None = None


def paged_attention(
    q: torch.Tensor,  # (N, n_heads, head_dim)
    k: torch.Tensor,  # (N, n_kv_heads, head_dim)
    v: torch.Tensor,  # (N, n_kv_heads, head_dim)
    k_cache: torch.Tensor,  # (num_slots, n_kv_heads, head_dim)
    v_cache: torch.Tensor,  # (num_slots, n_kv_heads, head_dim)
    meta: AttentionMetadata,
    sliding_window: int | None = None,
) -> torch.Tensor:  # (N, n_heads * head_dim)
    """Store this step's keys/values in the cache and attend over each sequence's full context.

    `q` must already be scaled by 1/sqrt(head_dim). The cache may be narrower than `q` (bfloat16 under
    float32 layers): new keys and values are rounded as they are written and widened as they are read,
    so every query attends to the same rounded values whichever path computes it.

    With `sliding_window` W (Gemma 3's local layers), a query at position p sees only keys at
    positions p - W + 1 .. p; the cache keeps every key (the blocks stay), the mask hides the old ones.
    The C++ kernels know no window, so such layers take the torch path."""
    k_cache.index_copy_(0, meta.slot_mapping, k.to(k_cache.dtype))
    v_cache.index_copy_(0, meta.slot_mapping, v.to(v_cache.dtype))
    if sliding_window is not None:
        meta = _with_window(meta, sliding_window)
    if (
        sliding_window is None
        and meta.context_lens is not None
        and q.dtype == torch.float32
        and k_cache.dtype in (torch.float32, torch.bfloat16)
        and k_cache.device.type == "cpu"
    ):
        kernels = cpu_kernels()
        if kernels is not None and meta.decode:
            return kernels.decode_attention(q, k_cache, v_cache, meta.kv_slots, meta.context_lens)
        if kernels is not None and meta.query_start is not None and q.shape[-1] % 16 == 0:
            return kernels.prefill_attention(
                q, k_cache, v_cache, meta.kv_slots, meta.query_start, meta.context_lens
            )
    keys = k_cache[meta.kv_slots]  # (B, T_kv, n_kv_heads, head_dim)
    values = v_cache[meta.kv_slots]
    if meta.decode:
        b, n_kv, dim = keys.shape[0], keys.shape[2], keys.shape[3]
        # Scores and softmax in float32 whatever the cache's dtype, as SDPA's kernels keep them:
        # bfloat16 scores (8 bits of mantissa: steps of 0.125 at a score of 20) turned SmolLM2's
        # "The capital of France is Paris." into "L'Étoile, la Marseillaise, ..." in bfloat16.
        grouped = q.float().view(b, n_kv, -1, dim)  # query head h reads KV head h // group
        scores = torch.matmul(grouped, keys.float().permute(0, 2, 3, 1))  # (B, n_kv, group, T_kv)
        if meta.decode_bias is not None:
            scores = scores + meta.decode_bias
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, values.float().transpose(1, 2))  # (B, n_kv, group, D)
        return out.view(b, -1).to(q.dtype)
    queries = q[meta.query_index].transpose(1, 2)  # (B, n_heads, T_q, head_dim)
    out = F.scaled_dot_product_attention(
        queries,
        keys.transpose(1, 2).to(q.dtype),  # a bfloat16 cache under float32 layers
        values.transpose(1, 2).to(q.dtype),
        attn_mask=meta.mask,
        scale=1.0,
        enable_gqa=q.shape[1] != k.shape[1],
    )  # (B, n_heads, T_q, head_dim)
    out = out.transpose(1, 2)  # (B, T_q, n_heads, head_dim)
    if meta.out_index is None:
        return out[meta.query_valid].flatten(1)  # (N, n_heads * head_dim), packed order
    return out.reshape(-1, q.shape[1] * q.shape[2])[meta.out_index]


def _with_window(meta: AttentionMetadata, window: int) -> AttentionMetadata:
    """`meta` whose masks also hide keys `window` or more positions before each query.

    A sequence's keys sit at positions 0..T_kv-1 of `kv_slots`, and a query at position p may see keys
    0..p, so p is the count of keys its causal mask allows, less one (padded query rows repeat the last
    real position, so they stay consistent). Computed per layer that needs it; cheap next to attention."""
    if meta.decode:
        if meta.context_lens is None:
            raise ValueError("a sliding window needs context_lens in decode metadata")
        num_seqs, max_kv = meta.kv_slots.shape
        key_pos = torch.arange(max_kv, device=meta.kv_slots.device)
        too_old = key_pos[None, :] <= (meta.context_lens[:, None] - 1 - window)  # (B, T_kv)
        bias = torch.zeros(num_seqs, 1, 1, max_kv, device=meta.kv_slots.device)
        bias = bias.masked_fill(too_old.view(num_seqs, 1, 1, max_kv), float("-inf"))
        if meta.decode_bias is not None:
            bias = bias + meta.decode_bias
        return replace(meta, decode_bias=bias)  # float32, as the scores it is added to
    assert meta.mask is not None
    query_pos = meta.mask.sum(-1, keepdim=True) - 1  # (B, 1, T_q, 1)
    key_pos = torch.arange(meta.mask.shape[-1], device=meta.mask.device)
    return replace(meta, mask=meta.mask & (key_pos > query_pos - window))
