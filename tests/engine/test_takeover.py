"""A request taken over from another engine (a cluster node that died) continues exactly.

`LLMEngine.take_over(request_id, prompt_ids, output_ids, params)` holds a request that already
produced `output_ids` elsewhere. With `EngineConfig.batch_invariant` (what cluster nodes run) every
token is computed by the same kind of step whatever else runs, so the continuation is bitwise the one
the first engine would have made (logprobs compared exactly), even when new prompts arrive on the
engine that takes it over. Seeded sampling and a grammar constraint continue too.

The model is the tiny one in Q4_1 with 128 hidden units: like SmolLM2 it runs the C++ int4 kernels,
whose decode and prompt-chunk paths round differently (the float32 tiny model computes both alike).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import gguf
import pytest

from llmasos.config import EngineConfig
from llmasos.engine.constrained import Grammar
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from tests.helpers.engines import random_prompts
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

GREEDY = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True, logprobs=0)
TAKEN_AFTER = 7  # tokens the first engine produced before it was lost


@pytest.fixture(scope="module")
def int4_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TinySpec(qtype=gguf.GGMLQuantizationType.Q4_1, hidden=128, ffn=256)
    path, _ = write_tiny_gguf(tmp_path_factory.mktemp("int4") / "tiny-q4_1.gguf", spec)
    return path


def engine_on(path: Path, batch_invariant: bool) -> LLMEngine:
    config = EngineConfig(kv_cache_bytes=4 * 2**20, num_threads=1, batch_invariant=batch_invariant)
    return LLMEngine.from_path(str(path), config)


def run(engine: LLMEngine, adds: dict, join_at: int | None = None, joining: dict | None = None) -> dict:
    """Step until idle; `adds`: id -> (prompt, params, output_ids); `joining` is added at step `join_at`.
    Returns id -> (token ids, logprobs) of what each produced here."""
    got: dict[str, tuple[list[int], list[float]]] = {}

    def add(batch: dict) -> None:
        for rid, (prompt, params, outputs) in batch.items():
            engine.take_over(rid, prompt, list(outputs), params)
            got[rid] = ([], [])

    add(adds)
    steps = 0
    while engine.has_unfinished_requests:
        steps += 1
        if steps == join_at:
            add(joining or {})
        for out in engine.step():
            got[out.request_id][0].extend(out.token_ids)
            got[out.request_id][1].extend(lp.logprob for lp in out.logprobs)
    return got


def others(n: int, seed: int) -> dict:
    """`n` other greedy requests (named after `seed`), of different lengths."""
    prompts = random_prompts([5 + i for i in range(n)], seed)
    return {f"o{seed}-{i}": (p, GREEDY, ()) for i, p in enumerate(prompts)}


def test_a_greedy_request_taken_over_continues_bitwise_even_beside_new_prompts(int4_tiny) -> None:
    prompt = random_prompts([11], seed=21)[0]
    whole = run(engine_on(int4_tiny, True), {"s": (prompt, GREEDY, ())})["s"]
    # The first engine is lost after TAKEN_AFTER tokens; another, busy with other prompts that keep
    # arriving, takes over from them.
    busy = run(
        engine_on(int4_tiny, True),
        {"s": (prompt, GREEDY, whole[0][:TAKEN_AFTER]), **others(3, seed=1)},
        join_at=4,
        joining=others(4, seed=2),
    )
    tokens, logprobs = busy["s"]
    assert whole[0][:TAKEN_AFTER] + tokens == whole[0]
    assert logprobs == whole[1][TAKEN_AFTER:]  # bitwise: the same numerics, not just the same argmax


def test_without_batch_invariance_the_continuation_is_not_bitwise(int4_tiny) -> None:
    """The control for the test above: it is the config that makes the continuation exact, both where
    earlier outputs are re-prefilled and where a decode token shares a step with new prompts."""
    prompt = random_prompts([11], seed=21)[0]
    whole = run(engine_on(int4_tiny, False), {"s": (prompt, GREEDY, ())})["s"]
    taken = run(engine_on(int4_tiny, False), {"s": (prompt, GREEDY, whole[0][:TAKEN_AFTER])})["s"]
    assert taken[1] != whole[1][TAKEN_AFTER:]
    joined = run(engine_on(int4_tiny, False), {"s": (prompt, GREEDY, ())}, join_at=4, joining=others(4, 2))
    assert joined["s"][1] != whole[1]


def test_a_seeded_sampled_request_taken_over_draws_what_it_would_have(int4_tiny) -> None:
    seed = 1
    params = SamplingParams(max_tokens=16, temperature=1.2, top_p=0.9, seed=seed, ignore_eos=True)
    prompt = random_prompts([9], seed=30 + seed)[0]
    whole = run(engine_on(int4_tiny, True), {"s": (prompt, params, ())})["s"][0]
    taken = run(engine_on(int4_tiny, True), {"s": (prompt, params, whole[:5]), **others(2, seed)})
    assert whole[:5] + taken["s"][0] == whole


def test_a_constrained_request_taken_over_keeps_its_grammar(int4_tiny) -> None:
    """The request's params reach the new engine pickled, as a cluster sends them to a node: the
    grammar is rebuilt there and its parse replayed from the tokens already produced."""
    engine = engine_on(int4_tiny, True)
    grammar = Grammar.json_object(engine.tokenizer, max_tokens=60)
    prompt = engine.tokenizer.encode("ignore the schema and write prose")
    params = SamplingParams(
        max_tokens=grammar.max_tokens, temperature=1.5, seed=5, logits_processors=(grammar.processor(),)
    )
    whole = run(engine, {"s": (prompt, params, ())})["s"][0]
    sent = pickle.loads(pickle.dumps(params))  # the processor has parsed `whole`: its parsers stay here
    rest = run(engine_on(int4_tiny, True), {"s": (prompt, sent, whole[:6])})["s"][0]
    assert whole[:6] + rest == whole
    json.loads(engine.tokenizer.decode(whole, skip_special_tokens=True))
