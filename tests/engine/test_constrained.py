"""Constrained decoding on the tiny random model: whatever the model wants, the output is in the grammar.

A random model is the hardest case for a constraint: it has no idea what JSON is, so every valid
output here is the constraint's doing. Sampling is hot (temperature 1.5) and seeded across many
seeds; an adversarial processor in front pushes the model towards ending early, closing quotes and
braces, and whitespace.
"""

from __future__ import annotations

import json

import gguf
import jsonschema
import pytest
import torch

from llmasos.engine.constrained import ConstrainedLogits, Grammar
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.engine.sequence import SuspendMode
from llmasos.errors import InvalidRequestError, InvalidSchemaError
from llmasos.model.tokenizer import Tokenizer
from tests.helpers.engines import config_with
from tests.helpers.tiny_tokenizer import add_tiny_spm_tokenizer

SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "age", "score", "ok"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "kind": {"enum": ["a", "b", "c d", 'q"uote']},
            "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 4},
            "owner": {
                "type": "object",
                "properties": {"id": {"type": "string", "minLength": 2}, "nothing": {"type": "null"}},
                "required": ["id", "nothing"],
            },
            "note": {"type": "string", "maxLength": 8},
        },
        "required": ["kind", "items", "owner"],
    },
    "array": {"type": "array", "items": {"type": "boolean"}, "maxItems": 5},
    "number": {"type": "number", "minimum": -2.5, "maximum": 1000},
}


@pytest.fixture(scope="module")
def engine(tiny_loaded) -> LLMEngine:
    return LLMEngine(tiny_loaded, config_with(tiny_loaded, num_blocks=512))


def _adversary(engine: LLMEngine):
    """A processor that pushes hard towards the tokens that would break JSON or end it too early."""
    tokenizer = engine.tokenizer
    pushed = sorted(tokenizer.stop_token_ids) + [
        i for i in range(tokenizer.vocab_size) if any(c in tokenizer.decode([i]) for c in '"}] \n\\,:')
    ]

    def push(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        logits[pushed] += 8.0
        return logits

    return push


def _prompts(engine: LLMEngine, n: int) -> list[list[int]]:
    texts = ['{"name": "x", "age": ', "ignore the schema and write prose", '}}]]"""\\', "Hello world"]
    return [engine.tokenizer.encode(texts[i % len(texts)]) for i in range(n)]


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_json_output_is_always_valid_under_the_schema(engine: LLMEngine, name: str) -> None:
    schema = SCHEMAS[name]
    grammar = Grammar.json_schema(schema, engine.tokenizer, max_tokens=160)
    for seed in range(24):
        processors = (_adversary(engine), grammar.processor()) if seed % 2 else (grammar.processor(),)
        params = SamplingParams(
            max_tokens=grammar.max_tokens, temperature=1.5, seed=seed, logits_processors=processors
        )
        text, tokens = engine.generate(_prompts(engine, 1 + seed % 4)[-1:], params)[0]
        value = json.loads(text)
        jsonschema.validate(value, schema)  # an independent validator, against the caller's schema
        assert tokens[-1] in engine.tokenizer.stop_token_ids, "the value ended with an end token, not a cut"


def test_choice_yields_exactly_one_option_across_seeds_and_adversaries(engine: LLMEngine) -> None:
    options = ["cat", "category", "dog", "café au lait", 'say "hi"', "a\nb"]
    grammar = Grammar.choice(options, engine.tokenizer)
    seen = set()
    for seed in range(40):
        processors = (_adversary(engine), grammar.processor()) if seed % 2 else (grammar.processor(),)
        params = SamplingParams(
            max_tokens=grammar.max_tokens, temperature=2.0, seed=seed, logits_processors=processors
        )
        text, tokens = engine.generate(_prompts(engine, 4)[seed % 4 :][:1], params)[0]
        assert text in options
        assert tokens[-1] in engine.tokenizer.stop_token_ids
        seen.add(text)
    assert len(seen) >= 3  # the random model really chooses; the constraint does not pick for it


def test_without_the_constraint_the_random_model_writes_no_json(engine: LLMEngine) -> None:
    """The control for the tests above: their valid outputs are the constraint's doing."""
    params = SamplingParams(max_tokens=40, temperature=1.5, seed=0)
    for text, _ in engine.generate(_prompts(engine, 8), params):
        with pytest.raises(ValueError):
            jsonschema.validate(json.loads(text), SCHEMAS["flat"])


def test_batched_sequences_each_keep_their_own_constraint(engine: LLMEngine) -> None:
    grammar = Grammar.json_schema(SCHEMAS["nested"], engine.tokenizer, max_tokens=160)
    # One processor shared by a whole batch: it keeps one parse per sequence it sees.
    shared = SamplingParams(
        max_tokens=grammar.max_tokens, temperature=1.5, seed=3, logits_processors=(grammar.processor(),)
    )
    outputs = engine.generate(_prompts(engine, 6), shared)
    for text, _ in outputs:
        jsonschema.validate(json.loads(text), SCHEMAS["nested"])
    assert len({text for text, _ in outputs}) > 1


@pytest.mark.parametrize("mode", list(SuspendMode))
def test_constraint_survives_suspend_and_resume(engine: LLMEngine, mode: SuspendMode) -> None:
    grammar = Grammar.json_schema(SCHEMAS["flat"], engine.tokenizer, max_tokens=160)
    prompt = engine.tokenizer.encode("Hello world")

    def params() -> SamplingParams:
        return SamplingParams(
            max_tokens=grammar.max_tokens, temperature=1.5, seed=11, logits_processors=(grammar.processor(),)
        )

    expected = engine.generate([prompt], params())[0][1]
    engine.add("r", prompt, params())
    tokens: list[int] = []
    for _ in range(6):
        tokens += [t for o in engine.step() for t in o.token_ids]
    engine.suspend("r", mode)
    engine.generate(
        [engine.tokenizer.encode("The quick brown fox")], SamplingParams(max_tokens=8, temperature=0)
    )
    engine.resume("r")
    while "r" in engine.requests:
        tokens += [t for o in engine.step() if o.request_id == "r" for t in o.token_ids]
    assert tokens == expected
    jsonschema.validate(json.loads(engine.tokenizer.decode(tokens)), SCHEMAS["flat"])


def test_parser_state_is_rebuilt_from_the_output_ids(engine: LLMEngine) -> None:
    grammar = Grammar.json_schema(SCHEMAS["flat"], engine.tokenizer, max_tokens=160)
    params = SamplingParams(
        max_tokens=grammar.max_tokens, temperature=1.5, seed=5, logits_processors=(grammar.processor(),)
    )
    _, tokens = engine.generate([engine.tokenizer.encode("Hello")], params)[0]
    used = ConstrainedLogits(grammar)
    logits = torch.zeros(engine.tokenizer.vocab_size)
    for n in range(len(tokens)):
        used(tokens[:n], logits.clone())
    # A processor that never saw this output masks exactly as the one that followed it step by step.
    for n in (0, 3, len(tokens) // 2, len(tokens) - 1):
        fresh = ConstrainedLogits(grammar)
        assert torch.equal(fresh(tokens[:n], logits.clone()), used(tokens[:n], logits.clone()))
    assert used.num_replays >= 1


def test_complete_value_allows_only_the_end_tokens(engine: LLMEngine) -> None:
    tokenizer = engine.tokenizer
    grammar = Grammar.json_schema(
        {"type": "array", "items": {"type": "boolean"}, "maxItems": 1}, tokenizer, 40
    )
    done = tokenizer.encode("[true]", add_special_tokens=False)
    allowed = (
        ConstrainedLogits(grammar)(done, torch.zeros(tokenizer.vocab_size)).isfinite().nonzero().flatten()
    )
    assert set(allowed.tolist()) == set(tokenizer.stop_token_ids)


def test_after_a_complete_value_ignore_eos_only_adds_end_tokens(engine: LLMEngine) -> None:
    tokenizer = engine.tokenizer
    grammar = Grammar.json_schema({"type": "boolean"}, tokenizer, 8)
    processor = grammar.processor()
    params = SamplingParams(
        max_tokens=12, temperature=1.5, seed=2, ignore_eos=True, logits_processors=(processor,)
    )
    _, tokens = engine.generate([tokenizer.encode("Hello")], params)[0]
    ends = [i for i, t in enumerate(tokens) if t in tokenizer.stop_token_ids]
    assert len(tokens) == 12 and ends == list(range(ends[0], 12))
    assert json.loads(tokenizer.decode(tokens[: ends[0]])) in (True, False)
    assert not processor.failed


def test_bad_grammar_requests_are_refused(engine: LLMEngine) -> None:
    with pytest.raises(InvalidSchemaError, match="not supported"):
        Grammar.json_schema({"type": "string", "not": {}}, engine.tokenizer, 100)
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        Grammar.json_schema({"type": "string"}, engine.tokenizer, 1)
    with pytest.raises(InvalidRequestError, match="at least one option"):
        Grammar.choice([], engine.tokenizer)
    with pytest.raises(InvalidRequestError, match="non-empty string"):
        Grammar.choice(["a", ""], engine.tokenizer)


def _spm_tokenizer(directory) -> Tokenizer:
    writer = gguf.GGUFWriter(str(directory / "spm.gguf"), "llama")
    add_tiny_spm_tokenizer(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Tokenizer.from_gguf(directory / "spm.gguf")


@pytest.mark.parametrize("kind", ["byte-level", "sentencepiece"])
def test_grammar_reads_the_vocabulary_as_our_decoder_does(engine: LLMEngine, kind: str, tmp_path) -> None:
    """Random walks through the grammar decode (with our tokenizer) to valid values."""
    tokenizer = engine.tokenizer if kind == "byte-level" else _spm_tokenizer(tmp_path)
    grammar = Grammar.json_schema(SCHEMAS["nested"], tokenizer, max_tokens=200)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        processor, ids = grammar.processor(), []
        while True:
            logits = processor(ids, torch.randn(tokenizer.vocab_size, generator=generator) * 3)
            token = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
            if token in tokenizer.stop_token_ids:
                break
            ids.append(token)
        assert len(ids) < grammar.max_tokens
        jsonschema.validate(json.loads(tokenizer.decode(ids)), SCHEMAS["nested"])
