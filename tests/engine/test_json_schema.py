"""The JSON Schema subset of constrained decoding: clear refusals, bounds that fit, a faithful validator."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from llmasos.engine.json_schema import (
    check_schema,
    fit_to_budget,
    validate,
    worst_case_bytes,
)
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


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "strin"}, "'type' must be one of"),
        ({"type": ["string", "null"]}, "a single type"),
        ([], "must be a JSON object"),
        ({"properties": {}}, "'type' is missing"),
        ({"type": "object", "required": ["x"]}, "required property 'x' is not in 'properties'"),
        ({"type": "object", "required": "x"}, "'required' must be a list"),
        ({"type": "object", "properties": []}, "'properties' must be an object"),
        ({"type": "object", "additionalProperties": True}, "'additionalProperties' may only be false"),
        ({"type": "string", "pattern": "^a"}, "keyword 'pattern' is not supported for type string"),
        ({"type": "string", "minLength": -1}, "'minLength' must be an integer >= 0"),
        (
            {"type": "string", "minLength": 5, "maxLength": 2},
            "'minLength' (5) is larger than 'maxLength' (2)",
        ),
        ({"type": "array"}, "needs 'items'"),
        ({"type": "integer", "minimum": "0"}, "'minimum' must be a number"),
        ({"type": "integer", "exclusiveMinimum": 3.5, "exclusiveMaximum": 3.9}, "no integer fits"),
        ({"type": "number", "multipleOf": 0}, "'multipleOf' must be positive"),
        ({"enum": []}, "non-empty list"),
        ({"enum": [{"a": 1}]}, "enum values must be strings, numbers, booleans or null"),
        ({"anyOf": [{"type": "string"}]}, "'type' is missing"),
        ({"type": "object", "properties": {"a": {"$ref": "#"}}}, "at $/a"),
    ],
)
def test_bad_or_unsupported_schemas_are_refused_with_the_reason(schema: object, says: str) -> None:
    with pytest.raises(InvalidSchemaError, match=None) as caught:
        check_schema(schema)
    assert says in str(caught.value)
    assert isinstance(caught.value, InvalidRequestError)  # a 400 for the caller


@pytest.mark.parametrize("budget", [200, 1000, 5000])
def test_bounded_schema_fits_the_budget_and_only_narrows_the_original(budget: int) -> None:
    bounded, bounds = fit_to_budget(PERSON, budget)
    assert worst_case_bytes(bounded) == bounds.worst_case_bytes <= budget
    assert bounded["additionalProperties"] is False
    assert bounded["properties"]["name"]["maxLength"] == bounds.max_length
    assert bounded["properties"]["address"]["properties"]["zip"]["maxLength"] <= 5
    # Everything the bounded schema accepts, the original accepts too.
    value = {"name": "a" * bounds.max_length, "age": 10**15, "score": -1.5, "tags": ["x"] * bounds.max_items}
    value["address"] = {"city": "é" * bounds.max_length}
    assert validate(value, bounded) == []
    jsonschema.validate(value, PERSON)


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
        },
        "required": ["s", "n", "i", "b", "z", "a"],
    }
    check_schema(schema)
    longest = {"s": "€€€", "n": -100.25, "i": 12345, "b": False, "z": None, "a": ["xy", "xy"]}
    text = json.dumps(longest, ensure_ascii=False, separators=(",", ":"))
    assert len(text.encode()) <= worst_case_bytes(schema)


def test_schema_too_large_for_the_budget_is_refused() -> None:
    many = {"type": "object", "properties": {f"field{i}": {"type": "string"} for i in range(40)}}
    with pytest.raises(InvalidSchemaError, match="more than the budget of 100 tokens"):
        fit_to_budget(many, 100)


def test_validator_agrees_with_jsonschema_on_random_values() -> None:
    rng = random.Random(0)
    bounded, _ = fit_to_budget(PERSON, 400)
    pool = [None, True, 0, -3, 2.5, 10**16, "", "abc", "x" * 300, [], ["a"], ["a"] * 20, {}, {"city": "P"}]
    for _ in range(500):
        value = {k: rng.choice(pool) for k in rng.sample([*PERSON["properties"], "extra"], rng.randint(0, 7))}
        ours = validate(value, bounded) == []
        try:
            jsonschema.validate(value, bounded)
            theirs = True
        except jsonschema.ValidationError:
            theirs = False
        assert ours == theirs, value


def test_validator_names_each_problem() -> None:
    bounded, _ = fit_to_budget(PERSON, 1000)
    errors = validate({"name": 3, "age": -1, "role": "root", "extra": 1}, bounded)
    assert "$.name: expected string, got integer" in errors
    assert "$.age: -1 is below the minimum" in errors
    assert any("'root' is not one of" in e for e in errors)
    assert any("unexpected property 'extra'" in e for e in errors)
