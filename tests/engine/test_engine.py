"""LLMEngine on the tiny random model: batching is invisible, requests end as asked, nothing leaks.

The tiny model repeats itself under plain greedy decoding; a repetition penalty makes its greedy
output vary, which the tests that need distinct tokens use.
"""

from __future__ import annotations

import random

import pytest
import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine, RequestOutput
from llmasos.engine.sampling import SamplingParams
from llmasos.errors import (
    ContextWindowExceededError,
    InvalidRequestError,
    KVCacheCapacityError,
    RequestNotFoundError,
)
from tests.helpers.engines import engine_with, random_prompts

VARIED = SamplingParams(max_tokens=16, temperature=0, repetition_penalty=1.3)


def run_all(engine: LLMEngine, prompts, params: SamplingParams) -> tuple[list[list[int]], list]:
    """Add every prompt, step to the end; (tokens of each, the sequences, to inspect their counters)."""
    ids = [f"r{i}" for i in range(len(prompts))]
    for request_id, prompt in zip(ids, prompts, strict=True):
        engine.add(request_id, prompt, params)
    seqs = [engine.requests[i].seq for i in ids]
    tokens: dict[str, list[int]] = {i: [] for i in ids}
    while engine.has_unfinished_requests:
        for output in engine.step():
            tokens[output.request_id] += output.token_ids
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    return [tokens[i] for i in ids], seqs


def final_output(engine: LLMEngine, prompt, params: SamplingParams) -> tuple[str, list[int], RequestOutput]:
    outputs = list(engine.stream(prompt, params))
    assert outputs[-1].finished and not any(o.finished for o in outputs[:-1])
    return "".join(o.text for o in outputs), [t for o in outputs for t in o.token_ids], outputs[-1]


def fresh_token_case(engine: LLMEngine, length: int, seed: int) -> tuple[list[int], list[int], int]:
    """(prompt, its VARIED output, an index j >= 2 whose token does not occur before j), found by search."""
    for attempt in range(seed, seed + 100):
        prompt = random_prompts([length], seed=attempt)[0]
        tokens = final_output(engine, prompt, VARIED)[1]
        j = next((j for j in range(2, len(tokens)) if tokens[j] not in tokens[:j]), None)
        if j is not None:
            return prompt, tokens, j
    raise AssertionError("no prompt gives a fresh token after the second: the tiny model changed")


# ---- batching is invisible ----------------------------------------------------------------------

PROMPTS = [*random_prompts([1, 3, 7, 12, 20, 33]), "The capital of France is"]
PARAMS = {
    "greedy": SamplingParams(max_tokens=12, temperature=0, ignore_eos=True),
    "greedy-penalty": SamplingParams(max_tokens=12, temperature=0, repetition_penalty=1.3, ignore_eos=True),
    "seeded": SamplingParams(max_tokens=12, temperature=1.0, seed=7, ignore_eos=True),
}


@pytest.fixture(scope="module")
def solo_tokens(tiny_loaded) -> dict[str, list[list[int]]]:
    """What each prompt gives alone, on an engine of its own."""
    engine = engine_with(tiny_loaded)
    return {name: [run_all(engine, [p], params)[0][0] for p in PROMPTS] for name, params in PARAMS.items()}


@pytest.mark.parametrize("params_name", list(PARAMS))
@pytest.mark.parametrize(
    ("layout", "kwargs"),
    [
        ("batched", {}),
        ("chunked-prefill", {"max_num_batched_tokens": 8}),
        ("preempting", {"num_blocks": 14}),
        ("chunked-and-preempting", {"num_blocks": 14, "max_num_batched_tokens": 6, "max_num_seqs": 3}),
        ("block-size-16", {"num_blocks": 16, "block_size": 16}),
    ],
)
def test_batched_generation_equals_solo_generation(
    tiny_loaded, solo_tokens, params_name: str, layout: str, kwargs: dict
) -> None:
    engine = engine_with(tiny_loaded, **kwargs)
    tokens, seqs = run_all(engine, PROMPTS, PARAMS[params_name])
    assert tokens == solo_tokens[params_name]
    assert all(len(t) == 12 for t in tokens)
    if "preempting" in layout:
        assert sum(s.num_preemptions for s in seqs) > 0, "the pool was meant to force preemption"


def test_solo_outputs_are_not_trivial(solo_tokens) -> None:
    # Guards the equality test above: distinct prompts give distinct, non-constant outputs.
    varied = solo_tokens["greedy-penalty"]
    assert len({tuple(t) for t in varied}) == len(PROMPTS)
    assert any(len(set(t)) > 3 for t in varied)


# ---- sampling through the engine ----------------------------------------------------------------


def test_same_seed_same_tokens_different_seed_different_tokens(tiny_engine) -> None:
    prompt = random_prompts([9], seed=3)[0]

    def tokens(seed: int) -> list[int]:
        return final_output(tiny_engine, prompt, SamplingParams(max_tokens=20, temperature=3.0, seed=seed))[1]

    assert tokens(123) == tokens(123)
    assert tokens(123) != tokens(124)


def test_max_tokens_is_honoured_with_finish_reason_length(tiny_engine) -> None:
    for max_tokens in (1, 5, 17):
        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
        _, tokens, last = final_output(tiny_engine, "Hello", params)
        assert len(tokens) == max_tokens == last.num_output_tokens
        assert last.finish_reason == "length"
        assert last.num_prompt_tokens == len(tiny_engine.tokenizer.encode("Hello"))


def test_end_of_turn_token_stops_unless_ignore_eos(tiny_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt, tokens, j = fresh_token_case(tiny_engine, 6, seed=4)
    # Make that greedy token the model's end-of-turn token.
    monkeypatch.setattr(tiny_engine.tokenizer, "stop_token_ids", frozenset({tokens[j]}))

    text, stopped, last = final_output(tiny_engine, prompt, VARIED)
    assert stopped == tokens[: j + 1]
    assert last.finish_reason == "stop"
    assert text == tiny_engine.tokenizer.decode(tokens[:j])  # the end-of-turn token adds no text

    params = SamplingParams(max_tokens=16, temperature=0, repetition_penalty=1.3, ignore_eos=True)
    _, ignored, last = final_output(tiny_engine, prompt, params)
    assert ignored == tokens
    assert last.finish_reason == "length"


def test_stop_string_ends_the_text_before_it(tiny_engine) -> None:
    prompt = random_prompts([11], seed=5)[0]
    full_text, full_tokens, _ = final_output(tiny_engine, prompt, VARIED)
    # A stop string the model really produces, first seen well after the start of the output.
    start = next(i for i in range(3, len(full_text) - 2) if full_text.find(full_text[i : i + 2]) == i)
    stop = full_text[start : start + 2]
    params = SamplingParams(max_tokens=16, temperature=0, repetition_penalty=1.3, stop=[stop, "\x00never"])
    text, tokens, last = final_output(tiny_engine, prompt, params)
    assert text == full_text[:start]
    assert stop not in text
    assert last.finish_reason == "stop"
    assert tokens == full_tokens[: len(tokens)] and len(tokens) < len(full_tokens)


def test_stop_token_ids_end_generation(tiny_engine) -> None:
    prompt, full_tokens, j = fresh_token_case(tiny_engine, 8, seed=6)
    params = SamplingParams(
        max_tokens=16, temperature=0, repetition_penalty=1.3, stop_token_ids=[full_tokens[j]]
    )
    text, tokens, last = final_output(tiny_engine, prompt, params)
    assert tokens == full_tokens[: j + 1]
    assert last.finish_reason == "stop"
    assert text == tiny_engine.tokenizer.decode(full_tokens[:j])


def test_stop_token_ids_apply_even_with_ignore_eos(tiny_engine) -> None:
    # ignore_eos ignores the model's end-of-turn tokens; stop ids the caller names still stop.
    prompt, full_tokens, j = fresh_token_case(tiny_engine, 8, seed=6)
    params = SamplingParams(
        max_tokens=16,
        temperature=0,
        repetition_penalty=1.3,
        stop_token_ids=[full_tokens[j]],
        ignore_eos=True,
    )
    _, tokens, last = final_output(tiny_engine, prompt, params)
    assert tokens == full_tokens[: j + 1]
    assert last.finish_reason == "stop"


def test_streamed_text_deltas_add_up_to_the_decoded_output(tiny_engine, monkeypatch) -> None:
    prompts = [*random_prompts([2, 5, 13, 30], seed=8), "Hello world", "Where is the user?"]
    for prompt in prompts:
        text, tokens, _ = final_output(
            tiny_engine, prompt, SamplingParams(max_tokens=24, temperature=1, seed=1)
        )
        assert text == tiny_engine.tokenizer.decode(tokens)
    # With an end-of-turn token at the end, its text is not part of the stream.
    prompt, tokens, j = fresh_token_case(tiny_engine, 5, seed=8)
    monkeypatch.setattr(tiny_engine.tokenizer, "stop_token_ids", frozenset({tokens[j]}))
    text, stopped, last = final_output(tiny_engine, prompt, VARIED)
    assert last.finish_reason == "stop" and stopped[-1] == tokens[j]
    assert text == tiny_engine.tokenizer.decode(stopped[:-1])


# ---- abort --------------------------------------------------------------------------------------


def test_abort_frees_every_block_and_a_second_abort_raises(tiny_engine) -> None:
    bm = tiny_engine.block_manager
    tiny_engine.add("live", random_prompts([30])[0], SamplingParams(max_tokens=50, ignore_eos=True))
    tiny_engine.add("other", random_prompts([10])[0], SamplingParams(max_tokens=50, ignore_eos=True))
    for _ in range(3):
        tiny_engine.step()
    assert bm.num_free_blocks < bm.num_blocks
    tiny_engine.abort("live")
    tiny_engine.abort("other")
    assert bm.num_free_blocks == bm.num_blocks
    assert sorted(bm.free_block_ids) == list(range(bm.num_blocks))
    assert tiny_engine.requests == {} and not tiny_engine.has_unfinished_requests
    with pytest.raises(RequestNotFoundError):
        tiny_engine.abort("live")
    with pytest.raises(RequestNotFoundError):
        tiny_engine.abort("never-added")
    assert tiny_engine.step().is_empty


def test_abort_of_a_waiting_request_and_of_a_finished_one(tiny_engine) -> None:
    tiny_engine.add("queued", [5, 6, 7])
    tiny_engine.abort("queued")  # never scheduled
    assert not tiny_engine.has_unfinished_requests
    list(tiny_engine.stream([5, 6, 7], SamplingParams(max_tokens=2)))
    tiny_engine.add("done", [5, 6], SamplingParams(max_tokens=1))
    outputs = tiny_engine.step()
    assert [o.finished for o in outputs] == [True]
    with pytest.raises(RequestNotFoundError):
        tiny_engine.abort("done")
    assert tiny_engine.block_manager.num_free_blocks == tiny_engine.block_manager.num_blocks


def test_closing_a_stream_early_aborts_its_request(tiny_engine) -> None:
    stream = tiny_engine.stream([5, 6, 7], SamplingParams(max_tokens=50, ignore_eos=True))
    next(stream)
    next(stream)
    stream.close()
    assert tiny_engine.requests == {}
    assert tiny_engine.block_manager.num_free_blocks == tiny_engine.block_manager.num_blocks


@pytest.mark.parametrize("seed", [0, 1])
def test_random_operations_lose_no_request_and_no_block(tiny_loaded, seed: int) -> None:
    rng = random.Random(seed)
    engine = engine_with(tiny_loaded, num_blocks=24, max_num_batched_tokens=16, max_num_seqs=4)
    bm = engine.block_manager
    added: dict[str, int] = {}  # id -> max_tokens
    aborted: set[str] = set()
    finishes: dict[str, RequestOutput] = {}
    counts: dict[str, int] = {}

    def record(outputs: list[RequestOutput]) -> None:
        for output in outputs:
            rid = output.request_id
            assert rid in added and rid not in aborted and rid not in finishes, f"output after the end: {rid}"
            counts[rid] = counts.get(rid, 0) + len(output.token_ids)
            assert output.num_output_tokens == counts[rid]
            if output.finished:
                finishes[rid] = output

    for op in range(320):
        roll = rng.random()
        live = sorted(engine.requests)
        if roll < 0.3:
            rid = f"req-{op}"
            n = rng.randint(1, 60)
            params = SamplingParams(
                max_tokens=rng.randint(1, 12),
                temperature=rng.choice([0, 0.8]),
                seed=rng.choice([None, op]),
                ignore_eos=rng.random() < 0.5,
            )
            engine.add(rid, [rng.randrange(0, 409) for _ in range(n)], params)
            added[rid] = params.max_tokens
        elif roll < 0.4 and live:
            rid = rng.choice(live)
            engine.abort(rid)
            aborted.add(rid)
        else:
            record(engine.step())
        held = [b for r in engine.requests.values() for b in r.seq.block_table]
        assert len(held) == len(set(held)) == bm.num_used_blocks
        assert set(engine.requests) == set(added) - aborted - set(finishes)
    while engine.has_unfinished_requests:
        record(engine.step())

    assert aborted and finishes
    assert set(finishes) | aborted == set(added)
    assert not set(finishes) & aborted
    assert engine.requests == {}
    assert bm.num_free_blocks == bm.num_blocks and bm.ref_counts == [0] * bm.num_blocks
    for rid, output in finishes.items():
        assert output.finish_reason in ("stop", "length")
        assert output.num_output_tokens <= added[rid]
        if output.finish_reason == "length":
            assert output.num_output_tokens == added[rid]


# ---- requests that are refused ------------------------------------------------------------------


@pytest.mark.parametrize(("length", "over"), [(256, 1), (300, 45)])
def test_prompt_over_the_context_window_is_refused_saying_by_how_much(tiny_engine, length, over) -> None:
    assert tiny_engine.context_length == 256
    with pytest.raises(ContextWindowExceededError) as info:
        tiny_engine.add("long", [5] * length)
    assert f"at least {over} token" in str(info.value)
    assert str(length) in str(info.value) and "256" in str(info.value)
    assert tiny_engine.requests == {} and not tiny_engine.has_unfinished_requests


def test_prompt_one_short_of_the_context_window_gets_one_token(tiny_engine) -> None:
    _, tokens, last = final_output(tiny_engine, [5] * 255, SamplingParams(max_tokens=50, ignore_eos=True))
    assert len(tokens) == 1 and last.finish_reason == "length"


def test_prompt_over_the_kv_pool_is_refused(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=16)  # 64 tokens, the context is 256
    with pytest.raises(KVCacheCapacityError) as info:
        engine.add("big", [5] * 100)
    assert "64" in str(info.value)
    assert engine.requests == {} and not engine.has_unfinished_requests
    # Just under the pool: accepted, and max_tokens is clamped so the sequence always fits.
    _, tokens, last = final_output(engine, [5] * 60, SamplingParams(max_tokens=50, ignore_eos=True))
    assert len(tokens) == 4 and last.finish_reason == "length"


@pytest.mark.parametrize(
    ("options", "dtype"),
    [
        ({}, torch.bfloat16),  # auto: int4 weights on CPU
        ({"kv_cache_dtype": "float32"}, torch.float32),
        ({"weight_format": "float32"}, torch.float32),  # auto with dense float32 weights: exact
        ({"weight_format": "float32", "kv_cache_dtype": "bfloat16"}, torch.bfloat16),
    ],
)
def test_kv_cache_dtype_follows_the_config_and_costs_theory_per_token(tiny_loaded, options, dtype) -> None:
    engine = engine_with(tiny_loaded, num_blocks=16, **options)
    c = tiny_loaded.config
    assert engine.runner.kv_cache.dtype == dtype
    per_token = 2 * c.num_layers * c.num_kv_heads * c.head_dim * dtype.itemsize
    assert engine.runner.kv_cache_bytes == 16 * 4 * per_token
    _, tokens, _ = final_output(engine, [5, 6, 7], SamplingParams(max_tokens=5, ignore_eos=True))
    assert len(tokens) == 5


def test_unknown_kv_cache_dtype_is_refused_naming_the_choices(tiny_loaded) -> None:
    with pytest.raises(ValueError, match="kv_cache_dtype 'float16'; use auto, float32 or bfloat16"):
        LLMEngine(tiny_loaded, EngineConfig(kv_cache_dtype="float16"))


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_prompt_is_refused(tiny_engine, prompt) -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        tiny_engine.add("empty", prompt)
    assert tiny_engine.requests == {}


@pytest.mark.parametrize("bad", [-1, 409, 10_000])
def test_out_of_range_token_ids_are_refused(tiny_engine, bad: int) -> None:
    assert tiny_engine.loaded.config.vocab_size == 409
    with pytest.raises(InvalidRequestError, match="409"):
        tiny_engine.add("bad", [5, bad, 6])
    assert tiny_engine.requests == {}


def test_duplicate_request_id_is_refused_and_the_first_is_untouched(tiny_engine) -> None:
    tiny_engine.add("same", [5, 6, 7], SamplingParams(max_tokens=3, ignore_eos=True))
    with pytest.raises(InvalidRequestError, match="same"):
        tiny_engine.add("same", [8, 9], SamplingParams(max_tokens=3))
    outputs = []
    while tiny_engine.has_unfinished_requests:
        outputs += tiny_engine.step()
    assert [o.request_id for o in outputs] == ["same"] * 3
    assert outputs[-1].num_prompt_tokens == 3 and outputs[-1].finish_reason == "length"
    # Once finished, the id is free again.
    tiny_engine.add("same", [8, 9], SamplingParams(max_tokens=1))
