"""The JSON Schema subset that constrained decoding supports: checking, bounding, validating values.

Supported (anything else is refused with the keyword and where it is):

- ``type``: one of object, array, string, number, integer, boolean, null
- object: ``properties``, ``required``, ``additionalProperties`` (absent or false; extra keys are
  never generated)
- array: ``items`` (one schema), ``minItems``, ``maxItems``
- string: ``minLength``, ``maxLength``; number/integer: ``minimum``, ``maximum``,
  ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``
- ``enum`` and ``const`` of strings, numbers, booleans or null
- annotations, ignored: ``title``, ``description``, ``default``, ``examples``, ``$schema``,
  ``$id``, ``$comment``

Why bound: a constrained generation only yields a complete value if it ends before its token
budget, and a model (a random one, or a real one stuck in a loop) may go on inside a string or a
number forever. `fit_to_budget` gives every string a maxLength, every array a maxItems, numbers a
range and at most six decimals, so that the longest value the schema allows, in bytes, fits the
budget; a token is at least one byte, so the value then always completes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from llmasos.errors import InvalidSchemaError

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment"})
KEYWORDS = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"minLength", "maxLength"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "boolean": set(),
    "null": set(),
}
#: Generated numbers stay within +-NUMBER_LIMIT and have at most NUMBER_DECIMALS decimals.
NUMBER_LIMIT = 10**15
NUMBER_DECIMALS = 6
#: Largest string length and array size given to strings/arrays that set none (lowered to fit).
DEFAULT_MAX_LENGTH = 512
DEFAULT_MAX_ITEMS = 16
COMFORTABLE_LENGTH = 64  # fewer array elements are preferred to strings shorter than this
#: Bytes one character of a JSON string can take: four in UTF-8; escapes are limited to two-byte ones.
BYTES_PER_CHAR = 4
MAX_DEPTH = 16


def _fail(path: str, message: str) -> None:
    raise InvalidSchemaError(f"the JSON schema is not usable at {path}: {message}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_schema(schema: object, path: str = "$") -> None:
    """Raise InvalidSchemaError unless `schema` is valid JSON Schema within the supported subset."""
    if path.count("/") > MAX_DEPTH:
        _fail(path, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(schema, dict):
        _fail(path, f"a schema must be a JSON object, got {type(schema).__name__}")
    if "enum" in schema or "const" in schema:
        _check_enum(schema, path)
        return
    kind = schema.get("type")
    if kind is None:
        _fail(path, f"'type' is missing (one of {', '.join(TYPES)}), or give 'enum'")
    if not isinstance(kind, str) or kind not in TYPES:
        _fail(path, f"'type' must be one of {', '.join(TYPES)} (a single type), got {kind!r}")
    allowed = KEYWORDS[kind] | ANNOTATIONS | {"type"}
    for key in schema:
        if key not in allowed:
            _fail(
                path,
                f"keyword {key!r} is not supported for type {kind}; supported: "
                f"{', '.join(sorted(KEYWORDS[kind])) or 'none'} (and annotations)",
            )
    {"object": _check_object, "array": _check_array, "string": _check_string}.get(
        kind, _check_number if kind in ("number", "integer") else lambda s, p: None
    )(schema, path)


def _check_enum(schema: dict, path: str) -> None:
    values = schema["enum"] if "enum" in schema else [schema["const"]]
    if "enum" in schema and "const" in schema:
        _fail(path, "give 'enum' or 'const', not both")
    if not isinstance(values, list) or not values:
        _fail(path, "'enum' must be a non-empty list")
    for value in values:
        if not (value is None or isinstance(value, str | bool) or _is_number(value)):
            _fail(path, f"enum values must be strings, numbers, booleans or null, got {value!r}")
    extra = set(schema) - ANNOTATIONS - {"enum", "const", "type"}
    if extra:
        _fail(path, f"keywords {sorted(extra)} cannot be combined with enum/const")


def _check_object(schema: dict, path: str) -> None:
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        _fail(path, "'properties' must be an object mapping names to schemas")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        _fail(path, "'required' must be a list of property names")
    for name in required:
        if name not in properties:
            _fail(path, f"required property {name!r} is not in 'properties'")
    if schema.get("additionalProperties", False) is not False:
        _fail(path, "'additionalProperties' may only be false (extra keys are never generated)")
    for name, sub in properties.items():
        check_schema(sub, f"{path}/{name}")


def _check_array(schema: dict, path: str) -> None:
    if "items" not in schema:
        _fail(path, "an array needs 'items' (one schema for every element)")
    _check_range(schema, path, "minItems", "maxItems")
    check_schema(schema["items"], f"{path}/items")


def _check_string(schema: dict, path: str) -> None:
    _check_range(schema, path, "minLength", "maxLength")


def _check_range(schema: dict, path: str, low: str, high: str) -> None:
    for key in (low, high):
        if key in schema and not _is_count(schema[key]):
            _fail(path, f"'{key}' must be an integer >= 0, got {schema[key]!r}")
    if schema.get(low, 0) > schema.get(high, math.inf):
        _fail(path, f"'{low}' ({schema[low]}) is larger than '{high}' ({schema[high]})")


def _check_number(schema: dict, path: str) -> None:
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        if key in schema and not _is_number(schema[key]):
            _fail(path, f"'{key}' must be a number, got {schema[key]!r}")
    if "multipleOf" in schema:
        step = schema["multipleOf"]
        if step <= 0:
            _fail(path, f"'multipleOf' must be positive, got {step!r}")
        if _decimals(step) > 12:
            _fail(path, f"'multipleOf' {step!r} has more than 12 decimals")
    low, high = _number_range(schema)
    if schema["type"] == "integer":
        low, high = _bounded_number(schema)["minimum"], _bounded_number(schema)["maximum"]
    if low > high or max(low, -NUMBER_LIMIT) > min(high, NUMBER_LIMIT):
        _fail(path, f"no {schema['type']} fits: the bounds {low} and {high} leave nothing within +-1e15")


def _decimals(value: float) -> int:
    return max(0, -int(Decimal(repr(value)).normalize().as_tuple().exponent))


def _number_range(schema: dict) -> tuple[float, float]:
    low = max(schema.get("minimum", -math.inf), schema.get("exclusiveMinimum", -math.inf))
    high = min(schema.get("maximum", math.inf), schema.get("exclusiveMaximum", math.inf))
    return low, high


# ---- bounding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """The limits `fit_to_budget` chose, and the longest value (bytes) they allow."""

    max_length: int  # strings without a smaller maxLength get this one
    max_items: int  # arrays without maxItems get this one
    worst_case_bytes: int


def bounded(schema: dict, max_length: int, max_items: int) -> dict:
    """A copy of a checked `schema` in which every string, array and number is bounded."""
    if "enum" in schema or "const" in schema:
        return dict(schema)
    kind = schema["type"]
    out = {k: v for k, v in schema.items() if k not in ANNOTATIONS or k == "description"}
    if kind == "object":
        properties = schema.get("properties", {})
        out["properties"] = {k: bounded(v, max_length, max_items) for k, v in properties.items()}
        out["additionalProperties"] = False
    elif kind == "array":
        out["items"] = bounded(schema["items"], max_length, max_items)
        out["maxItems"] = min(schema.get("maxItems", max_items), max(max_items, schema.get("minItems", 0)))
    elif kind == "string":
        out["maxLength"] = min(
            schema.get("maxLength", max_length), max(max_length, schema.get("minLength", 0))
        )
    elif kind in ("number", "integer"):
        out.update(_bounded_number(schema))
    return out


def _bounded_number(schema: dict) -> dict:
    """The range of a number/integer schema intersected with +-NUMBER_LIMIT; six decimals at most."""
    out = {k: schema[k] for k in ("multipleOf",) if k in schema}
    if schema["type"] == "integer":  # exclusive bounds become inclusive ones, which stay exact
        low = math.floor(schema["exclusiveMinimum"]) + 1 if "exclusiveMinimum" in schema else -math.inf
        high = math.ceil(schema["exclusiveMaximum"]) - 1 if "exclusiveMaximum" in schema else math.inf
        low = max(low, math.ceil(schema.get("minimum", -NUMBER_LIMIT)), -NUMBER_LIMIT)
        high = min(high, math.floor(schema.get("maximum", NUMBER_LIMIT)), NUMBER_LIMIT)
        return {**out, "minimum": int(low), "maximum": int(high)}
    for key, limit, pick in (("minimum", -NUMBER_LIMIT, max), ("maximum", NUMBER_LIMIT, min)):
        out[key] = pick(schema.get(key, limit), limit)
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in schema:
            out[key] = schema[key]
    out.setdefault("multipleOf", 10.0**-NUMBER_DECIMALS)
    return out


def worst_case_bytes(schema: dict) -> int:
    """Bytes of the longest compact JSON value a bounded schema allows (an upper bound)."""
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        return max(_literal_bytes(v) for v in values)
    kind = schema["type"]
    if kind == "object":
        properties = schema.get("properties", {})
        keys = sum(len(json.dumps(k, ensure_ascii=False).encode()) + 1 for k in properties)
        return 2 + keys + sum(worst_case_bytes(v) for v in properties.values()) + max(len(properties) - 1, 0)
    if kind == "array":
        n = schema["maxItems"]
        return 2 + n * worst_case_bytes(schema["items"]) + max(n - 1, 0)
    if kind == "string":
        return 2 + BYTES_PER_CHAR * schema["maxLength"]
    if kind in ("number", "integer"):
        low, high = _number_range(schema)
        digits = len(str(int(max(abs(low), abs(high)))))
        decimals = _decimals(schema["multipleOf"]) if "multipleOf" in schema else 0
        if kind == "number" and decimals:
            digits += 1 + decimals
        return 1 + digits  # the sign
    return {"boolean": 5, "null": 4}[kind]


def _literal_bytes(value: object) -> int:
    if isinstance(value, str):  # any character may come escaped as \uXXXX (UTF-16 units)
        return 2 + 6 * (len(value.encode("utf-16-le")) // 2)
    return len(json.dumps(value))


def fit_to_budget(schema: object, budget_bytes: int) -> tuple[dict, Bounds]:
    """Check `schema`, then bound it as loosely as `budget_bytes` allows.

    Arrays without maxItems get 16 elements, or fewer where that leaves strings shorter than
    COMFORTABLE_LENGTH characters. InvalidSchemaError when even one-character strings and
    one-element arrays do not fit.
    """
    check_schema(schema)
    assert isinstance(schema, dict)
    fits = []
    for max_items in (DEFAULT_MAX_ITEMS, 8, 4, 2, 1):
        length = _longest_fitting_length(schema, max_items, budget_bytes)
        if length is not None:
            fits.append((max_items, length))
            if length >= COMFORTABLE_LENGTH:
                break
    if not fits:
        smallest = worst_case_bytes(bounded(schema, 1, 1))
        raise InvalidSchemaError(
            f"the schema's values can be {smallest} bytes long even with one-character strings and "
            f"one-element arrays, more than the budget of {budget_bytes} tokens; give smaller maxLength/"
            "maxItems, fewer properties, or a larger max_tokens"
        )
    max_items, length = max(fits, key=lambda fit: (min(fit[1], COMFORTABLE_LENGTH), fit[0]))
    result = bounded(schema, length, max_items)
    return result, Bounds(length, max_items, worst_case_bytes(result))


def _longest_fitting_length(schema: dict, max_items: int, budget_bytes: int) -> int | None:
    low, high = 1, DEFAULT_MAX_LENGTH
    if worst_case_bytes(bounded(schema, low, max_items)) > budget_bytes:
        return None
    while low < high:  # worst_case_bytes grows with the cap: binary search
        mid = (low + high + 1) // 2
        if worst_case_bytes(bounded(schema, mid, max_items)) <= budget_bytes:
            low = mid
        else:
            high = mid - 1
    return low


# ---- validating values ----------------------------------------------------------------------------


def validate(value: Any, schema: dict, path: str = "$") -> list[str]:
    """What is wrong with `value` under a checked `schema`, one message per problem (empty: valid)."""
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        same = any(type(v) is type(value) and v == value for v in values) or (
            _is_number(value) and any(_is_number(v) and v == value for v in values)
        )
        return [] if same else [f"{path}: {value!r} is not one of {values!r}"]
    kind = schema["type"]
    if not _has_type(value, kind):
        return [f"{path}: expected {kind}, got {_type_name(value)}"]
    if kind == "object":
        return _validate_object(value, schema, path)
    if kind == "array":
        errors = _bounds_errors(len(value), schema, "minItems", "maxItems", path, "items")
        for index, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{index}]")
        return errors
    if kind == "string":
        return _bounds_errors(len(value), schema, "minLength", "maxLength", path, "characters")
    if kind in ("number", "integer"):
        return _number_errors(value, schema, path)
    return []


def _validate_object(value: dict, schema: dict, path: str) -> list[str]:
    properties = schema.get("properties", {})
    errors = [
        f"{path}: missing required property {name!r}"
        for name in schema.get("required", [])
        if name not in value
    ]
    for key, item in value.items():
        if key not in properties:
            if schema.get("additionalProperties", True) is False:  # JSON Schema: extra keys allowed
                errors.append(
                    f"{path}: unexpected property {key!r}; allowed: {', '.join(properties) or 'none'}"
                )
        else:
            errors += validate(item, properties[key], f"{path}.{key}")
    return errors


def _bounds_errors(n: int, schema: dict, low: str, high: str, path: str, unit: str) -> list[str]:
    if n < schema.get(low, 0):
        return [f"{path}: has {n} {unit}, fewer than {low} {schema[low]}"]
    if n > schema.get(high, math.inf):
        return [f"{path}: has {n} {unit}, more than {high} {schema[high]}"]
    return []


def _number_errors(value: float, schema: dict, path: str) -> list[str]:
    errors = []
    if value < schema.get("minimum", -math.inf) or value <= schema.get("exclusiveMinimum", -math.inf):
        errors.append(f"{path}: {value} is below the minimum")
    if value > schema.get("maximum", math.inf) or value >= schema.get("exclusiveMaximum", math.inf):
        errors.append(f"{path}: {value} is above the maximum")
    step = schema.get("multipleOf")
    if step and abs(round(value / step) * step - value) > 1e-9 * max(1.0, abs(value)):
        errors.append(f"{path}: {value} is not a multiple of {step}")
    return errors


def _has_type(value: object, kind: str) -> bool:
    if kind == "integer":
        return _is_number(value) and float(value).is_integer()
    return {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "number": _is_number,
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }[kind](value)


def _type_name(value: object) -> str:
    for kind in ("boolean", "integer", "number", "string", "array", "object", "null"):
        if _has_type(value, kind):
            return kind
    return type(value).__name__
