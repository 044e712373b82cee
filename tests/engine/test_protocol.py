"""The engine protocol: the real engine and the tests' fake both implement every operation the kernel
uses, with the protocol's own signatures; a step reports what each request computed."""

from __future__ import annotations

import inspect

import pytest

from llmasos.engine.engine import LLMEngine
from llmasos.engine.protocol import Engine, StepOutput
from llmasos.engine.sampling import SamplingParams
from tests.helpers.engines import engine_with, random_prompts
from tests.helpers.fake_engine import FakeEngine

PROTOCOL_METHODS = [
    name for name, member in vars(Engine).items() if inspect.isfunction(member) and not name.startswith("_")
]
PROTOCOL_PROPERTIES = [name for name, member in vars(Engine).items() if isinstance(member, property)]


def test_the_protocol_names_what_the_kernel_uses() -> None:
    assert set(PROTOCOL_METHODS) == {"add", "step", "abort", "suspend", "resume", "suspend_costs", "stats"}
    assert set(PROTOCOL_PROPERTIES) == {
        "tokenizer",
        "context_length",
        "max_sequence_tokens",
        "max_num_seqs",
        "memory_bytes",
    }


@pytest.fixture(params=["LLMEngine", "FakeEngine"])
def engine(request, tiny_loaded):
    return engine_with(tiny_loaded, num_blocks=32) if request.param == "LLMEngine" else FakeEngine()


def test_both_engines_satisfy_the_protocol(engine) -> None:
    assert isinstance(engine, Engine)
    for name in PROTOCOL_METHODS:
        want = inspect.signature(getattr(Engine, name))
        got = inspect.signature(getattr(type(engine), name))
        assert list(got.parameters) == list(want.parameters), name
        for param in want.parameters.values():
            other = got.parameters[param.name]
            assert (other.kind, other.default) == (param.kind, param.default), f"{name}({param.name})"
        assert got.return_annotation == want.return_annotation, name
    for name in PROTOCOL_PROPERTIES:
        assert getattr(engine, name) is not None, name
    assert isinstance(engine.max_num_seqs, int) and isinstance(engine.memory_bytes, int)


def test_a_step_reports_what_each_request_computed_prompt_chunks_included(tiny_loaded) -> None:
    engine: LLMEngine = engine_with(tiny_loaded, num_blocks=32, max_num_batched_tokens=16)
    long, short = random_prompts([30, 5], seed=1)
    engine.add("long", long, SamplingParams(max_tokens=2, temperature=0))
    first = engine.step()
    assert isinstance(first, StepOutput)
    assert dict(first.num_computed_tokens) == {"long": 16} and first.outputs == ()  # a chunk, no token
    engine.add("short", short, SamplingParams(max_tokens=2, temperature=0))
    second = engine.step()
    assert dict(second.num_computed_tokens) == {"long": 14, "short": 2}  # the budget's rest
    assert [o.request_id for o in second] == ["long"] and second.total_computed_tokens == 16
    third = engine.step()
    assert dict(third.num_computed_tokens) == {"long": 1, "short": 3}
    assert [(o.request_id, o.finished) for o in third] == [("long", True), ("short", False)]


def test_a_step_reports_the_work_of_each_requests_tokens_by_their_positions(tiny_loaded) -> None:
    """A prompt chunk is charged as prefill from where it starts, a sampled token as decode at its
    position: the kernel's fair share counts what attending to a long context costs."""
    engine: LLMEngine = engine_with(tiny_loaded, num_blocks=32, max_num_batched_tokens=16)
    cost = engine.work_cost
    (prompt,) = random_prompts([30], seed=2)
    engine.add("r", prompt, SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    first, second = engine.step(), engine.step()
    assert first.work_of("r") == pytest.approx(cost.prefill(0, 16))
    assert second.work_of("r") == pytest.approx(cost.prefill(16, 14))
    third = engine.step()  # the first sampled token, at position 30
    assert dict(third.num_computed_tokens) == {"r": 1}
    assert third.work_of("r") == pytest.approx(cost.decode(30))
    assert first.work_of("r") > 16  # each position read adds to a prefill token's cost
    assert StepOutput(num_computed_tokens={"x": 3}).work_of("x") == 3.0  # an engine that did not say
