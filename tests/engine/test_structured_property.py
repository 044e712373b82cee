"""Property: over random schemas of every accepted keyword, the tiny random model at high temperature
always writes a value that parses and is valid under the schema (the `jsonschema` library, formats
checked), ended by an end token within the budget.

The random model has no idea what JSON is, so every valid value is the constraint's doing. Budgets
too small for a schema are refused with a minimum; the test then uses that minimum, so the refusal's
number is checked too.
"""

from __future__ import annotations

import json
import re
import string

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmasos.engine.constrained import Grammar
from llmasos.engine.engine import LLMEngine
from llmasos.engine.json_schema import FORMATS
from llmasos.engine.sampling import SamplingParams
from llmasos.errors import InvalidSchemaError
from tests.helpers.engines import config_with

CONTEXT = 1024
NAMES = st.text(string.ascii_letters + "_é", min_size=1, max_size=6)
# Exact binary fractions: jsonschema checks multipleOf in floating point (0.07 / 0.01 is not whole).
STEPS = st.sampled_from([0.5, 0.25, 2, 5])
PATTERNS = st.sampled_from(
    [r"^[a-z]{1,5}$", r"^[0-9]{3}-[0-9]{2}$", r"^(ab|cd)+$", r"^\w+@x\.org$", r"^[A-Z]"]
)
LITERALS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.text(string.printable + 'é€"\\', max_size=5),
    st.just({"k": [1, "v"]}),
)


def _with(base: dict, draw, **optional) -> dict:
    """`base` plus each optional keyword drawn or left out."""
    for key, strategy in optional.items():
        if draw(st.booleans()):
            base[key] = draw(strategy)
    return base


@st.composite
def strings(draw) -> dict:
    kind = draw(st.sampled_from(["plain", "format", "pattern"]))
    if kind == "format":
        return {"type": "string", "format": draw(st.sampled_from(sorted(FORMATS)))}
    if kind == "pattern":
        return {"type": "string", "pattern": draw(PATTERNS), "maxLength": 12}
    low = draw(st.integers(0, 3))
    return _with({"type": "string"}, draw, minLength=st.just(low), maxLength=st.integers(low, 10))


@st.composite
def numbers(draw) -> dict:
    kind = draw(st.sampled_from(["integer", "number"]))
    low = draw(st.integers(-50, 50))
    schema = {"type": kind}
    schema |= draw(st.sampled_from([{"minimum": low}, {"exclusiveMinimum": low}, {}]))
    schema |= draw(st.sampled_from([{"maximum": low + 60}, {"exclusiveMaximum": low + 60}, {}]))
    return _with(schema, draw, multipleOf=STEPS if kind == "number" else st.just(3))


LEAVES = st.one_of(
    strings(),
    numbers(),
    st.sampled_from(
        [{"type": "boolean"}, {"type": "null"}, {}, {"type": ["string", "null"], "maxLength": 4}]
    ),
    st.lists(LITERALS, min_size=1, max_size=4, unique_by=json.dumps).map(lambda v: {"enum": v}),
    LITERALS.map(lambda v: {"const": v}),
)


@st.composite
def objects(draw, children) -> dict:
    properties = draw(st.dictionaries(NAMES, children, max_size=3))
    required = [name for name in properties if draw(st.booleans())]
    schema = {"type": "object", "properties": properties, "required": required}
    return _with(schema, draw, additionalProperties=st.sampled_from([False, True]), title=st.just("T"))


@st.composite
def arrays(draw, children) -> dict:
    low = draw(st.integers(0, 2))
    return _with(
        {"type": "array", "items": draw(children)}, draw, minItems=st.just(low), maxItems=st.integers(low, 4)
    )


def unions(children):
    # oneOf over distinct types, so that exactly one branch matches (as pydantic's tagged unions).
    exclusive = st.lists(
        st.sampled_from(
            [{"type": "string", "maxLength": 3}, {"type": "boolean"}, {"type": "null"}, {"type": "integer"}]
        ),
        min_size=2,
        max_size=3,
        unique_by=json.dumps,
    ).map(lambda branches: {"oneOf": branches})
    nullable = children.map(lambda s: {"anyOf": [s, {"type": "null"}], "default": None})
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda b: {"anyOf": b}), exclusive, nullable
    )


NESTED = st.recursive(LEAVES, lambda c: st.one_of(objects(c), arrays(c), unions(c)), max_leaves=6)
TREE = {  # pydantic's recursive model: a $ref to itself inside an optional array
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "v": {"type": "integer"},
                "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            },
            "required": ["v"],
        }
    },
    "$ref": "#/$defs/Node",
}


@st.composite
def schemas(draw) -> dict:
    shape = draw(st.sampled_from(["nested", "defs", "tree"]))
    if shape == "tree":
        return TREE
    root = draw(NESTED)
    if shape == "defs":  # the drawn schema as a definition, referenced twice (as pydantic nests models)
        return {
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/D"},
                "b": {"type": "array", "items": {"$ref": "#/$defs/D"}},
            },
            "required": ["a"],
            "$defs": {"D": root},
        }
    return root


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> LLMEngine:
    from llmasos.model.loader import load_model
    from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

    path, _ = write_tiny_gguf(tmp_path_factory.mktemp("tiny1k") / "tiny.gguf", TinySpec(context=CONTEXT))
    loaded = load_model(path)
    return LLMEngine(loaded, config_with(loaded, num_blocks=1024))


def _grammar(engine: LLMEngine, schema: dict, max_tokens: int) -> Grammar:
    try:
        return Grammar.json_schema(schema, engine.tokenizer, max_tokens)
    except InvalidSchemaError as refused:  # only ever for the budget: it names the one that works
        minimum = int(re.search(r"at least (\d+)", refused.message).group(1))
        assert minimum > max_tokens
        return Grammar.json_schema(schema, engine.tokenizer, minimum)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(schema=schemas(), max_tokens=st.integers(24, 400), seed=st.integers(0, 2**16))
def test_every_output_parses_and_is_valid_under_the_schema(
    engine: LLMEngine, schema, max_tokens, seed
) -> None:
    grammar = _grammar(engine, schema, max_tokens)
    params = SamplingParams(
        max_tokens=grammar.max_tokens, temperature=1.5, seed=seed, logits_processors=(grammar.processor(),)
    )
    prompts = [engine.tokenizer.encode(text) for text in ("write prose", '}]"\\', "{")]
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for text, tokens in engine.generate(prompts, params):
        validator.validate(json.loads(text))  # raises, naming the keyword, if the constraint slipped
        assert tokens[-1] in engine.tokenizer.stop_token_ids, "the value ended with an end token, not a cut"
        assert len(tokens) <= grammar.max_tokens
