"""`sampling_params`: one request's fields, as every interface names them, to the engine's SamplingParams."""

from __future__ import annotations

import pytest

from llmasos.api.generation import request_sampling
from llmasos.api.schemas import ChatCompletionRequest
from llmasos.engine.sampling import SamplingParams
from llmasos.errors import InvalidSamplingParamsError
from llmasos.kernel.sampling_request import sampling_params

MESSAGES = [{"role": "user", "content": "hi"}]


def test_absent_and_none_fields_take_the_engines_defaults() -> None:
    assert sampling_params({}) == SamplingParams()
    assert sampling_params({"temperature": None, "seed": None, "stop": None}) == SamplingParams()


def test_fields_map_by_their_request_names_and_other_names_are_ignored() -> None:
    body = {
        "model": "tiny",
        "messages": MESSAGES,
        "stream": True,
        "n": 2,
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 4,
        "repetition_penalty": 1.2,
        "seed": 11,
        "stop": ["\n\n", "END"],
    }
    assert sampling_params(body) == SamplingParams(
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=4,
        repetition_penalty=1.2,
        seed=11,
        stop=("\n\n", "END"),
    )


def test_a_single_stop_string_is_a_one_item_list() -> None:
    assert sampling_params({"stop": "END"}).stop == ("END",)


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert sampling_params({"max_tokens": 5, "max_completion_tokens": 9}).max_tokens == 9
    assert sampling_params({"max_completion_tokens": 9}).max_tokens == 9


def test_each_choice_of_a_seeded_request_gets_its_own_seed() -> None:
    assert [sampling_params({"seed": 40}, choice=i).seed for i in range(3)] == [40, 41, 42]
    assert sampling_params({}, choice=2).seed is None  # unseeded stays unseeded


def test_programmatic_fields_pass_through() -> None:
    def no_change(ids, logits):
        return logits

    params = sampling_params({"ignore_eos": True, "stop_token_ids": [3], "logits_processors": [no_change]})
    assert params.ignore_eos and params.stop_token_ids == (3,) and params.logits_processors == (no_change,)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_k": -2}, "top_k"),
        ({"seed": "x"}, "seed"),
        ({"stop": 5}, "stop"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_bad_values_are_refused_naming_the_field(fields: dict, named: str) -> None:
    with pytest.raises(InvalidSamplingParamsError, match=named):
        sampling_params(fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {}),
        (
            {"max_tokens": 12, "temperature": 0.0, "stop": "x"},
            {"max_tokens": 12, "temperature": 0.0, "stop": ("x",)},
        ),
        (
            {"max_completion_tokens": 3, "max_tokens": 8, "top_p": 0.5, "top_k": 2, "seed": 7, "n": 3},
            {"max_tokens": 3, "top_p": 0.5, "top_k": 2, "seed": 7},
        ),
        (
            {"seed": 1, "stop": ["a", "b"], "temperature": 1.5},
            {"seed": 1, "stop": ("a", "b"), "temperature": 1.5},
        ),
        ({"repetition_penalty": 1.3}, {"repetition_penalty": 1.3}),
    ],
)
def test_an_openai_body_maps_to_the_engines_fields(fields: dict, expected: dict) -> None:
    """What the HTTP routes send the engine for each of a body's `n` choices: OpenAI's names, the newer
    max_completion_tokens winning, one stop string as a list, a seeded choice's seed offset by its index."""
    body = ChatCompletionRequest.model_validate({"model": "tiny", "messages": MESSAGES, **fields})
    for choice in range(body.n):
        seeded = {"seed": expected["seed"] + choice} if "seed" in expected else {}
        assert request_sampling(body, choice) == SamplingParams(**{**expected, **seeded})
