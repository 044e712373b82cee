"""The C++ prefill attention (csrc/prefill_attention.cpp): causal attention of packed prompt chunks over a
paged KV cache, against a float64 reference, against the torch path it replaces, and across chunkings."""

from __future__ import annotations

import pytest
import torch

from llmasos.model.attention import AttentionMetadata, paged_attention
from llmasos.model.native import cpu_kernels

kernels = cpu_kernels()
pytestmark = pytest.mark.skipif(
    kernels is None, reason="C++ kernels unavailable (no AVX2 or compiler, LLMASOS_NATIVE=0, or build failed)"
)

BLOCK = 16


def _scattered_slots(context_lens: list[int], num_slots: int, seed: int) -> torch.Tensor:
    """(B, max context) slots: each sequence's context in whole 16-slot blocks, blocks in random order."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_slots // BLOCK, generator=gen)
    slots = torch.zeros(len(context_lens), max(context_lens), dtype=torch.long)
    used = 0
    for b, n in enumerate(context_lens):
        blocks = perm[used : used + -(-n // BLOCK)]
        used += len(blocks)
        slots[b, :n] = (blocks[:, None] * BLOCK + torch.arange(BLOCK)).flatten()[:n]
    return slots


def _reference(q, k_cache, v_cache, slots, query_lens, context_lens) -> torch.Tensor:
    """Float64 causal attention, one sequence at a time: query i of a sequence sits at position
    context - queries + i and sees keys 0 ..= that position."""
    heads, kv_heads = q.shape[1], k_cache.shape[1]
    outs, start = [], 0
    for b, (n, length) in enumerate(zip(query_lens, context_lens, strict=True)):
        qs = q[start : start + n].double()
        start += n
        keys = k_cache[slots[b, :length]].double().repeat_interleave(heads // kv_heads, 1)
        values = v_cache[slots[b, :length]].double().repeat_interleave(heads // kv_heads, 1)
        scores = torch.einsum("nhd,lhd->hnl", qs, keys)
        positions = torch.arange(length - n, length)[:, None]
        scores = scores.masked_fill(torch.arange(length)[None, :] > positions, float("-inf"))
        outs.append(torch.einsum("hnl,lhd->nhd", scores.softmax(-1), values).reshape(n, -1))
    return torch.cat(outs).float()


def _case(heads, kv_heads, dim, query_lens, context_lens, cache_dtype, seed=0):
    torch.manual_seed(seed)
    num_slots = 64 * BLOCK
    k_cache = torch.randn(num_slots, kv_heads, dim).to(cache_dtype)
    v_cache = torch.randn(num_slots, kv_heads, dim).to(cache_dtype)
    slots = _scattered_slots(context_lens, num_slots, seed)
    # q as the model passes it: a strided view of the fused q|k rows after RoPE.
    q = (torch.randn(sum(query_lens), heads + kv_heads, dim) * 0.5)[:, :heads]
    query_start = torch.tensor([0, *torch.tensor(query_lens).cumsum(0).tolist()])
    return q, k_cache, v_cache, slots, query_start, torch.tensor(context_lens)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim"),
    [(9, 3, 64), (4, 4, 16), (8, 2, 128)],
    ids=["gqa3-d64", "mha-d16", "gqa4-d128"],
)
def test_prefill_attention_equals_causal_attention_in_float64(cache_dtype, heads, kv_heads, dim) -> None:
    """A mixed step: a whole prompt, a later chunk over cached tokens, a decode token, a prompt longer than
    one query block and several key blocks, and a one-token prompt."""
    query_lens = [37, 100, 1, 70, 1]
    context_lens = [37, 230, 50, 70, 1]
    q, k_cache, v_cache, slots, query_start, lens = _case(
        heads, kv_heads, dim, query_lens, context_lens, cache_dtype
    )
    out = kernels.prefill_attention(q, k_cache, v_cache, slots, query_start, lens)
    expected = _reference(q, k_cache.float(), v_cache.float(), slots, query_lens, context_lens)
    assert out.shape == (sum(query_lens), heads * dim)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)


def test_a_prompt_gives_the_same_bits_in_one_chunk_or_several() -> None:
    """Key blocks start at absolute positions and a row ignores blocks past its position, so a token's
    result does not depend on how its prompt was chunked or what shared the step."""
    length = 300
    q, k_cache, v_cache, slots, _, _ = _case(9, 3, 64, [length], [length], torch.bfloat16, seed=3)
    whole = kernels.prefill_attention(
        q, k_cache, v_cache, slots, torch.tensor([0, length]), torch.tensor([length])
    )
    pieces, done = [], 0
    for chunk in (45, 128, 127):
        part = q[done : done + chunk]
        pieces.append(
            kernels.prefill_attention(
                part, k_cache, v_cache, slots, torch.tensor([0, chunk]), torch.tensor([done + chunk])
            )
        )
        done += chunk
    assert torch.equal(torch.cat(pieces), whole)
    # Alongside another sequence in the same step.
    other = _case(9, 3, 64, [20], [20], torch.bfloat16, seed=4)[0]
    both = kernels.prefill_attention(
        torch.cat([other, q[done - 127 :]]),
        k_cache,
        v_cache,
        torch.stack([slots[0, :length], slots[0, :length]]),
        torch.tensor([0, 20, 147]),
        torch.tensor([20, length]),
    )
    assert torch.equal(both[20:], whole[done - 127 :])


def test_paged_attention_takes_the_kernel_and_agrees_with_the_torch_path() -> None:
    """The metadata the model runner builds for a prefill step: with query_start the kernel runs; without
    it, the padded SDPA path does; both write the same cache rows and return the same outputs."""
    torch.manual_seed(5)
    heads, kv_heads, dim = 6, 2, 32
    query_lens, context_lens = [5, 12], [9, 12]
    num_slots = 8 * BLOCK
    slots = _scattered_slots(context_lens, num_slots, seed=5)
    q = torch.randn(sum(query_lens), heads, dim)
    k, v = torch.randn(sum(query_lens), kv_heads, dim), torch.randn(sum(query_lens), kv_heads, dim)
    slot_mapping = torch.cat(
        [slots[b, c - n : c] for b, (n, c) in enumerate(zip(query_lens, context_lens, strict=True))]
    )
    max_q, max_kv = max(query_lens), max(context_lens)
    col = torch.arange(max_q)
    q_lens, lens = torch.tensor(query_lens), torch.tensor(context_lens)
    valid = col[None] < q_lens[:, None]
    q_pos = (lens - q_lens)[:, None] + torch.minimum(col[None], (q_lens - 1)[:, None])
    mask = (torch.arange(max_kv)[None, None] <= q_pos[..., None]) & (
        torch.arange(max_kv) < lens[:, None, None]
    )
    common = dict(
        slot_mapping=slot_mapping,
        kv_slots=slots,
        query_index=torch.where(valid, (q_lens.cumsum(0) - q_lens)[:, None] + col, 0),
        query_valid=valid,
        mask=mask[:, None],
        out_index=valid.flatten().nonzero().flatten(),
        context_lens=lens,
    )
    caches = [torch.randn(num_slots, kv_heads, dim).bfloat16() for _ in range(2)]
    results = []
    for query_start in (torch.tensor([0, 5, 17]), None):
        k_cache, v_cache = caches[0].clone(), caches[1].clone()
        out = paged_attention(q, k, v, k_cache, v_cache, AttentionMetadata(**common, query_start=query_start))
        results.append((out, k_cache, v_cache))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    assert torch.equal(results[0][1], results[1][1]) and torch.equal(results[0][2], results[1][2])


def test_bad_metadata_is_refused_with_a_message() -> None:
    q, k_cache, v_cache, slots, query_start, lens = _case(9, 3, 64, [10], [10], torch.float32)
    bad_slots = slots.clone()
    bad_slots[0, 3] = k_cache.shape[0]
    with pytest.raises(RuntimeError, match="bad slot"):
        kernels.prefill_attention(q, k_cache, v_cache, bad_slots, query_start, lens)
    with pytest.raises(RuntimeError, match="query_start"):
        kernels.prefill_attention(q, k_cache, v_cache, slots, torch.tensor([0, 9]), lens)
    with pytest.raises(RuntimeError, match="context length"):
        kernels.prefill_attention(q, k_cache, v_cache, slots, query_start, torch.tensor([9]))
