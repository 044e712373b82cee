"""The JSON Schema of constrained decoding: refusals that name the path, bounds that fit and only narrow.

Values are checked with the `jsonschema` library against the *original* schema: every value the
bounded copy allows must be valid under what the client sent.
"""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import llguidance
import pytest
from pydantic import BaseModel, Field

from llmasos.engine.json_object import ObjectShape, json_object_grammar
from llmasos.engine.json_schema import FORMATS, check_schema, fit_to_budget
from llmasos.engine.schema_bounds import worst_case_bytes
from llmasos.errors import InvalidRequestError, InvalidSchemaError

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "full name"},
        "age": {"type": "integer", "minimum": 0},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "role": {"enum": ["admin", "user"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
            "required": ["city"],
        },
    },
    "required": ["name", "age"],
}


class Address(BaseModel):
    city: str
    zip: str | None = Field(None, pattern=r"^[0-9]{5}$")


class Node(BaseModel):
    value: int
    children: list[Node] = []


class Order(BaseModel):
    """Pydantic emits $defs/$ref, anyOf with null, Literal as enum/const, formats, bounds."""

    id: str = Field(json_schema_extra={"format": "uuid"})
    kind: Literal["book", "film"]
    price: float = Field(ge=0, le=1000)
    count: int = Field(gt=0, lt=100)
    tags: list[str] = Field(min_length=1, max_length=3)
    ship_to: Address
    bill_to: Address | None = None
    when: str = Field(json_schema_extra={"format": "date-time"})
    tree: Node | None = None
    pair: tuple[int, str] | None = None


ZOD_STYLE = {  # as zod-to-json-schema writes a nullable string, a const and a definitions ref
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "note": {"type": ["string", "null"], "maxLength": 20},
        "version": {"const": 2},
        "point": {"$ref": "#/definitions/point"},
        "mode": {"enum": ["a", 1, None, {"x": [1]}]},
    },
    "required": ["note", "version", "point", "mode"],
    "additionalProperties": False,
    "definitions": {
        "point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
            "additionalProperties": False,
        }
    },
}


@pytest.mark.parametrize(
    ("schema", "path", "says"),
    [
        ({"type": "strin"}, "$/type", "'type' must be one of object, array"),
        ([], "$", "must be a JSON object"),
        ({"type": "object", "required": ["x"]}, "$/required", "required property 'x' is not in 'properties'"),
        ({"type": "object", "required": "x"}, "$/required", "is not of type 'array'"),
        ({"type": "string", "minLength": -1}, "$/minLength", "less than the minimum of 0"),
        (
            {"type": "string", "minLength": 5, "maxLength": 2},
            "$",
            "'minLength' (5) is larger than 'maxLength'",
        ),
        ({"type": "object", "properties": {"a": {"not": {}}}}, "$/properties/a/not", "keyword 'not'"),
        (
            {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
            "$/uniqueItems",
            "uniqueItems",
        ),
        ({"type": "string", "minimum": 1}, "$/minimum", "does not apply to type string"),
        ({"type": "string", "format": "bogus"}, "$/format", "format 'bogus' is not supported"),
        ({"type": "string", "pattern": "(("}, "$/pattern", "unclosed group"),
        ({"type": "string", "pattern": "(?=a)a"}, "$/pattern", "look-around"),
        ({"$ref": "#/$defs/Missing"}, "$/$ref", "points at nothing"),
        ({"$ref": "http://example.com/s.json"}, "$/$ref", "only local references"),
        ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "$/allOf", "more than one schema"),
        ({"type": "number", "multipleOf": 0}, "$/multipleOf", "less than or equal to the minimum of 0"),
        (
            {"type": "object", "properties": {"s": {"$ref": "#"}}, "required": ["s"]},
            "$",
            "no value satisfies it",
        ),
        (
            {
                "$defs": {"A": {"type": "object", "properties": {"b": {"type": "string", "foo": 1}}}},
                "$ref": "#/$defs/A",
            },
            "$/$defs/A/properties/b/foo",
            "keyword 'foo'",
        ),
    ],
)
def test_bad_or_unsupported_schemas_are_refused_naming_the_path(schema: object, path: str, says: str) -> None:
    with pytest.raises(InvalidSchemaError) as caught:
        fit_to_budget(schema, 1000)
    assert f"at {path}:" in caught.value.message and says in caught.value.message
    assert isinstance(caught.value, InvalidRequestError)  # a 400 for the caller


def test_the_path_prefix_is_the_callers() -> None:
    with pytest.raises(InvalidSchemaError, match=r"at tools\.0\.parameters/properties/a/not:"):
        check_schema({"type": "object", "properties": {"a": {"not": {}}}}, "tools.0.parameters")


@pytest.mark.parametrize(
    "schema",
    [
        PERSON,
        Order.model_json_schema(),
        ZOD_STYLE,
        Node.model_json_schema(),
        {"type": ["string", "null"]},
        {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "boolean"}]},
        {"const": {"a": [1, "x"]}},
        {"type": "object", "additionalProperties": True},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {},
        True,
        {"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
        {"anyOf": [True, {"type": "null"}]},
        {"allOf": [True], "type": "integer"},
    ],
    ids=lambda s: json.dumps(s)[:40],
)
@pytest.mark.parametrize("budget", [600, 2000, 8000])
def test_accepted_schemas_fit_the_budget_and_only_narrow(schema: dict, budget: int) -> None:
    check_schema(schema)
    bounded, bounds = fit_to_budget(schema, budget)
    assert worst_case_bytes(bounded) == bounds.worst_case_bytes <= budget
    assert "$ref" not in json.dumps(bounded)  # self-contained for llguidance
    jsonschema.Draft202012Validator.check_schema(bounded)


def test_recursion_is_followed_as_deep_as_the_budget_allows() -> None:
    tree = Node.model_json_schema()
    _, small = fit_to_budget(tree, 60)
    _, large = fit_to_budget(tree, 20_000)
    assert small.recursion < large.recursion == 3
    nested = {"value": 1, "children": [{"value": 2, "children": [{"value": 3, "children": []}]}]}
    bounded, _ = fit_to_budget(tree, 20_000)
    jsonschema.validate(nested, bounded)  # three levels fit the bounded copy


def test_bounded_strings_keep_room_for_their_format() -> None:
    schema = {
        "type": "object",
        "properties": {f"f{i}": {"type": "string", "format": f} for i, f in enumerate(FORMATS)},
    }
    bounded, _ = fit_to_budget(schema, 4000)
    for i, name in enumerate(FORMATS):
        assert bounded["properties"][f"f{i}"]["maxLength"] >= FORMATS[name]


def test_worst_case_bytes_is_an_upper_bound_of_the_longest_value() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "maxLength": 3},
            "n": {"type": "number", "minimum": -100, "maximum": 100, "multipleOf": 0.01},
            "i": {"type": "integer", "minimum": -5, "maximum": 12345},
            "b": {"type": "boolean"},
            "z": {"type": "null"},
            "a": {"type": "array", "items": {"enum": ["xy", 7]}, "maxItems": 2},
            "o": {"anyOf": [{"type": "string", "maxLength": 1}, {"const": {"k": "vvvv"}}]},
        },
        "required": ["s", "n", "i", "b", "z", "a", "o"],
    }
    bounded, bounds = fit_to_budget(schema, 1000)
    longest = {
        "s": "€€€",
        "n": -99.99,
        "i": 12345,
        "b": False,
        "z": None,
        "a": ["xy", "xy"],
        "o": {"k": "vvvv"},
    }
    text = json.dumps(longest, ensure_ascii=False, separators=(",", ":"))
    assert len(text.encode()) <= bounds.worst_case_bytes
    jsonschema.validate(longest, bounded)


def test_a_budget_too_small_says_the_minimum() -> None:
    many = {"type": "object", "properties": {f"field{i}": {"type": "string"} for i in range(40)}}
    with pytest.raises(
        InvalidSchemaError, match=r"more than the budget of 100 tokens; set max_tokens to at least (\d+)"
    ) as caught:
        fit_to_budget(many, 100)
    minimum = int(caught.value.message.split("at least ")[1].split(",")[0])
    fit_to_budget(many, minimum - 1)  # the stated minimum works (the budget is max_tokens - 1)


def test_json_object_shapes_fit_and_prefer_nesting() -> None:
    for budget in (40, 255, 1023, 8000):
        text, worst = json_object_grammar(budget)
        assert worst <= budget
        grammar = llguidance.LLMatcher.grammar_from_lark(text)
        assert llguidance.LLMatcher.validate_grammar(grammar, llguidance.LLTokenizer("byte")) == ""
    assert ObjectShape(2, 8, 12).worst_case_bytes() > ObjectShape(1, 8, 12).worst_case_bytes()
    assert "){0,1}" in json_object_grammar(127)[0]  # two members of 8+ characters, not one long one
    with pytest.raises(InvalidSchemaError, match="at least"):
        json_object_grammar(5)


def test_enum_values_outside_the_other_keywords_are_not_generated() -> None:
    assert fit_to_budget({"type": "string", "enum": ["a", 1]}, 100)[0] == {"enum": ["a"]}
    # A pattern only Rust's regex syntax reads stays beside the enum, for llguidance to intersect.
    bounded, _ = fit_to_budget({"type": "string", "pattern": r"^\p{L}+$", "enum": ["a", "1"]}, 100)
    assert bounded["pattern"] == r"^\p{L}+$"
