"""Prefix sharing: requests that start alike share computed KV blocks copy-free, within a namespace."""

from __future__ import annotations

from llmasos.engine.sampling import SamplingParams
from tests.helpers.engines import engine_with, random_prompts

GREEDY = SamplingParams(max_tokens=8, temperature=0, repetition_penalty=1.3)


def run(engine, request_id: str, prompt: list[int], params=GREEDY, namespace: str = "default"):
    """(output tokens, the last output) of one request run to completion alone."""
    engine.add(request_id, prompt, params, cache_namespace=namespace)
    tokens, last = [], None
    while engine.has_unfinished_requests:
        for out in engine.step():
            tokens += out.token_ids
            last = out
    return tokens, last


def test_second_request_reuses_the_shared_prefix_and_answers_the_same(tiny_loaded) -> None:
    system = random_prompts([13], seed=1)[0]  # 3 full blocks of 4, and one token over
    a, b = [*system, 5, 6], [*system, 7, 8, 9]
    cached = engine_with(tiny_loaded, num_blocks=32)
    uncached = engine_with(tiny_loaded, num_blocks=32, enable_prefix_caching=False)
    tokens_a, out_a = run(cached, "a", a)
    tokens_b, out_b = run(cached, "b", b)
    assert out_a.num_cached_tokens == 0
    assert out_b.num_cached_tokens == 12
    assert tokens_a == run(uncached, "a", a)[0]
    assert tokens_b == run(uncached, "b", b)[0]
    stats = cached.stats()
    assert stats.prefix_cache_hits == 12 and stats.prefix_cache_queries == len(a) + len(b)
    assert stats.num_free_blocks == stats.num_blocks


def test_live_sequences_share_the_same_blocks_copy_free(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=32)
    system = random_prompts([8], seed=2)[0]
    run(engine, "warm", [*system, 3])
    engine.add("x", [*system, 4, 5], GREEDY)
    engine.add("y", [*system, 6], GREEDY)
    engine.step()
    x, y = engine.requests["x"].seq, engine.requests["y"].seq
    assert x.block_table[:2] == y.block_table[:2]
    assert [engine.block_manager.ref_counts[b] for b in x.block_table[:2]] == [2, 2]
    assert x.block_table[2] != y.block_table[2]


def test_a_prompt_of_whole_blocks_still_computes_its_last_token(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=32)
    prompt = random_prompts([12], seed=3)[0]
    first, _ = run(engine, "a", prompt)
    again, out = run(engine, "b", prompt)
    assert out.num_cached_tokens == 8  # the third block holds the last token, which must be computed
    assert again == first


def test_namespaces_never_share_blocks(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=32)
    prompt = random_prompts([17], seed=4)[0]
    run(engine, "a", prompt, namespace="app-a")
    _, other = run(engine, "b", prompt, namespace="app-b")
    _, same = run(engine, "c", prompt, namespace="app-a")
    assert other.num_cached_tokens == 0
    assert same.num_cached_tokens == 16


def test_cached_blocks_are_evicted_when_the_pool_needs_them(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=12)
    first = random_prompts([17], seed=5)[0]
    run(engine, "a", first)
    assert engine.block_manager.num_cached_blocks >= 4
    # Fill the pool with unrelated work: the cached blocks give way, nothing is refused.
    for i, prompt in enumerate(random_prompts([30, 30, 30], seed=6)):
        tokens, out = run(engine, f"fill{i}", prompt, SamplingParams(max_tokens=10, temperature=0))
        assert out.finished and len(tokens) == 10
    _, again = run(engine, "a2", first)
    assert again.num_cached_tokens == 0
    assert engine.block_manager.num_free_blocks == 12


def test_preempted_sequence_recomputes_from_its_own_cached_blocks(tiny_loaded) -> None:
    """Recompute after preemption is mostly a prefix-cache hit, and the output is unchanged."""
    prompts = random_prompts([10, 11, 9, 12], seed=7)
    params = SamplingParams(max_tokens=12, temperature=0, repetition_penalty=1.3)
    tight = engine_with(tiny_loaded, num_blocks=14)
    roomy = engine_with(tiny_loaded, num_blocks=64, enable_prefix_caching=False)
    for i, prompt in enumerate(prompts):
        tight.add(f"r{i}", prompt, params)
        roomy.add(f"r{i}", prompt, params)
    results = {}
    for engine in (tight, roomy):
        tokens = {f"r{i}": [] for i in range(len(prompts))}
        seqs = [engine.requests[k].seq for k in tokens]
        while engine.has_unfinished_requests:
            for out in engine.step():
                tokens[out.request_id] += out.token_ids
        results[engine is tight] = (tokens, sum(s.num_preemptions for s in seqs))
    assert results[True][1] > 0, "the tight pool should have forced a preemption"
    assert results[True][0] == results[False][0]
    assert tight.stats().prefix_cache_hits > 0
