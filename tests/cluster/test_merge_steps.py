"""A node answers the head's call with several engine steps merged per request (`merge_steps`): the
streams read from merged steps are the ones read step by step (no Ray here)."""

from __future__ import annotations

from llmasos.cluster.remote_engine import merge_steps
from llmasos.engine.sampling import SamplingParams
from tests.helpers.engines import engine_with, random_prompts

PARAMS = SamplingParams(max_tokens=7, temperature=0, logprobs=1)


def streams(engine, prompts: list[list[int]], steps_per_call: int) -> dict:
    for i, prompt in enumerate(prompts):
        engine.add(f"r{i}", prompt, PARAMS)
    got: dict[str, list] = {f"r{i}": [[], "", [], 0, None] for i in range(len(prompts))}
    while engine.has_unfinished_requests:
        merged = merge_steps([engine.step() for _ in range(steps_per_call)])
        assert len({o.request_id for o in merged.outputs}) == len(merged.outputs)  # one per request
        for out in merged.outputs:
            tokens, text, logprobs, _, _ = got[out.request_id]
            got[out.request_id] = [tokens + out.token_ids, text + out.text, logprobs + list(out.logprobs)]
            got[out.request_id] += [out.num_output_tokens, out.finish_reason]
        assert all(computed >= 1 for computed in merged.num_computed_tokens.values())
    return got


def test_merged_steps_carry_the_same_streams_as_single_steps(tiny_loaded) -> None:
    prompts = random_prompts([5, 9, 3, 12], seed=2)
    single = streams(engine_with(tiny_loaded), prompts, 1)
    merged = streams(engine_with(tiny_loaded), prompts, 3)
    assert merged == single
    assert all(s[3] == 7 and s[4] == "length" for s in merged.values())


def test_merged_steps_sum_each_requests_computed_work(tiny_loaded) -> None:
    """The kernel charges a node's merged steps by their work: the sum of the steps' (a request's
    tokens, when a step did not say)."""
    engine = engine_with(tiny_loaded)
    (prompt,) = random_prompts([12], seed=3)
    engine.add("r", prompt, PARAMS)
    steps = [engine.step() for _ in range(3)]
    merged = merge_steps(steps)
    assert merged.work_of("r") == sum(step.work_of("r") for step in steps) > 12  # prefill reads positions
    bare = [type(step)(step.outputs, step.num_computed_tokens) for step in steps]  # no work said
    assert merge_steps(bare).work_of("r") == sum(step.num_computed_tokens["r"] for step in steps)
