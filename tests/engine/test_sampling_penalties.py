"""presence/frequency penalties, logit_bias and logprobs: in the Sampler, in SamplingParams'
validation, and through the engine on the tiny random model (issue 22: each was accepted and ignored)."""

from __future__ import annotations

import math

import pytest
import torch

from llmasos.engine.sampling import Sampler, SamplingParams, SamplingState
from llmasos.errors import InvalidSamplingParamsError

CPU = torch.device("cpu")


def state(**kwargs) -> SamplingState:
    return SamplingState.create(SamplingParams(**kwargs), CPU)


def expected_logprobs(logits: torch.Tensor) -> list[float]:
    return logits.log_softmax(-1).tolist()


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"presence_penalty": 5}, "presence_penalty"),
        ({"presence_penalty": -2.01}, "presence_penalty"),
        ({"frequency_penalty": math.nan}, "frequency_penalty"),
        ({"frequency_penalty": "1"}, "frequency_penalty"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": "x"}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {-1: 1}}, "logit_bias"),
        ({"logit_bias": [(1, 2, 3)]}, "logit_bias"),
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_bad_penalties_bias_and_logprobs_raise_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidSamplingParamsError, match=field):
        SamplingParams(**kwargs)


def test_logit_bias_keys_given_as_json_strings_become_sorted_int_pairs() -> None:
    params = SamplingParams(logit_bias={"7": -100, "2": 5.5})
    assert params.logit_bias == ((2, 5.5), (7, -100.0))
    assert SamplingParams(logit_bias=params.logit_bias) == params


# ---- penalties -------------------------------------------------------------------------------


def test_presence_and_frequency_follow_openais_formula_on_generated_tokens_only() -> None:
    logits = torch.zeros(1, 8)
    st = state(temperature=0, presence_penalty=1.0, frequency_penalty=0.5, logprobs=8)
    # token 1 is in the prompt only: no penalty; 3 was generated twice, 5 once
    out = Sampler()(logits, [st], [[1, 3, 3, 5]], [[3, 3, 5]])
    expected = torch.zeros(8)
    expected[3] = -(2 * 0.5 + 1.0)
    expected[5] = -(1 * 0.5 + 1.0)
    top = dict(out.logprobs[0].top)
    assert [top[i] for i in range(8)] == pytest.approx(expected_logprobs(expected), abs=1e-6)
    assert out.token_ids[0] not in (3, 5)


def test_a_negative_presence_penalty_moves_greedy_onto_a_generated_token() -> None:
    logits = torch.tensor([[1.0, 0.5, 0.0]])
    assert Sampler()(logits, [state(temperature=0)], [[2]], [[2]]).token_ids == [0]
    assert Sampler()(logits, [state(temperature=0, presence_penalty=-2)], [[2]], [[2]]).token_ids == [2]


def test_penalties_apply_to_their_own_row_only() -> None:
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    states = [state(temperature=0, frequency_penalty=2), state(temperature=0)]
    assert Sampler()(logits, states, [[0], [0]], [[0], [0]]).token_ids == [1, 0]


def test_the_callers_logits_stay_as_they_were() -> None:
    logits = torch.randn(2, 20, generator=torch.Generator().manual_seed(3))
    before = logits.clone()
    states = [state(temperature=0, presence_penalty=1, logit_bias={4: 3}), state(seed=1, logprobs=2)]
    Sampler()(logits, states, [[1, 2], [3]], [[1, 2], [3]])
    assert torch.equal(logits, before)


# ---- logit_bias ------------------------------------------------------------------------------


def test_logit_bias_bans_and_forces_tokens() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    sampler = Sampler()
    assert sampler(logits, [state(temperature=0, logit_bias={"0": -100})], [[]]).token_ids == [1]
    forced = state(temperature=1.5, seed=4, logit_bias={3: 100})
    assert {sampler(logits, [forced], [[]]).token_ids[0] for _ in range(20)} == {3}


# ---- logprobs --------------------------------------------------------------------------------


def test_logprobs_are_the_log_softmax_of_the_biased_logits_before_temperature() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]])
    st = state(temperature=0.7, seed=1, logit_bias={2: 1.0}, logprobs=3)
    out = Sampler()(logits, [st], [[]])
    biased = logits[0].clone()
    biased[2] += 1.0
    reference = expected_logprobs(biased)
    chosen = out.logprobs[0]
    assert chosen.token_id == out.token_ids[0]
    assert chosen.logprob == pytest.approx(reference[chosen.token_id], abs=1e-6)
    assert [i for i, _ in chosen.top] == [0, 2, 1]
    assert [lp for _, lp in chosen.top] == pytest.approx([reference[0], reference[2], reference[1]], abs=1e-6)


def test_at_temperature_zero_the_chosen_token_is_the_top_alternative() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(5))
    states = [state(temperature=0, logprobs=5), state(temperature=0), state(temperature=0, logprobs=0)]
    out = Sampler()(logits, states, [[]] * 3)
    first, none, bare = out.logprobs
    assert first.top[0] == (out.token_ids[0], pytest.approx(first.logprob))
    assert len(first.top) == 5 and all(lp <= 0 for _, lp in first.top)
    assert [a[1] for a in first.top] == sorted((a[1] for a in first.top), reverse=True)
    assert none is None
    assert bare.top == () and bare.logprob <= 0


# ---- through the engine ----------------------------------------------------------------------


def test_engine_reports_a_logprob_per_generated_token(tiny_engine) -> None:
    params = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True, logprobs=2)
    outputs = list(tiny_engine.stream([1, 2, 3, 4], params))
    logprobs = [lp for o in outputs for lp in o.logprobs]
    tokens = [t for o in outputs for t in o.token_ids]
    assert [lp.token_id for lp in logprobs] == tokens and len(tokens) == 5
    assert all(lp.top[0][0] == lp.token_id and len(lp.top) == 2 for lp in logprobs)
    plain = list(
        tiny_engine.stream([1, 2, 3, 4], SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
    )
    assert [t for o in plain for t in o.token_ids] == tokens
    assert all(o.logprobs == () for o in plain)


def test_engine_refuses_a_logit_bias_beyond_the_vocabulary(tiny_engine) -> None:
    vocab = tiny_engine.loaded.config.vocab_size
    with pytest.raises(InvalidSamplingParamsError, match=f"token id {vocab}.*vocabulary"):
        tiny_engine.add("r", [1, 2], SamplingParams(logit_bias={vocab: 1}))
    assert "r" not in tiny_engine.requests


def test_engine_applies_frequency_penalty_to_what_it_generated(tiny_engine) -> None:
    # The tiny model repeats itself greedily; a strong frequency penalty must stop the repetition.
    base = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    plain = [t for o in tiny_engine.stream([5, 6, 7], base) for t in o.token_ids]
    penalized_params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, frequency_penalty=2.0)
    penalized = [t for o in tiny_engine.stream([5, 6, 7], penalized_params) for t in o.token_ids]
    assert len(set(plain)) < len(set(penalized))
