"""The JSON Schema that constrained decoding accepts: checked when a request arrives, bounded to a budget.

The grammar engine (llguidance) compiles the schema; this module decides what it is given. Accepted,
as pydantic v2 and zod emit it:

- ``type`` (one name or a list, e.g. ``["string", "null"]``); ``enum`` and ``const`` of any JSON values
- ``$ref`` to local pointers (``#/$defs/X``, ``#/definitions/X``, ``#``, ...), recursive ones too;
  ``$defs``/``definitions``; ``anyOf``, ``oneOf`` (generated as anyOf), ``allOf`` of one schema
- object: ``properties``, ``required``, ``additionalProperties`` (false, true, a schema, or absent:
  only the declared properties are generated), ``minProperties``, ``maxProperties``
- array: ``items``, ``prefixItems``, ``minItems``, ``maxItems``
- string: ``minLength``, ``maxLength``, ``pattern`` (no look-around or back-references), ``format``
  (those in FORMATS); number/integer: ``minimum``, ``maximum``, ``exclusiveMinimum``,
  ``exclusiveMaximum``, ``multipleOf``
- annotations, ignored: ANNOTATIONS (``title``, ``description``, ``default``, ``discriminator``, ...)

Anything else is refused at arrival with the keyword and its JSON path (``$/properties/a/not``), and
so is a schema llguidance cannot compile. Why bound: a constrained generation only yields a complete
value if it ends before its token budget; `fit_to_budget` (in `schema_bounds`) caps strings, arrays,
numbers and recursion so that the longest value the schema allows, in bytes, fits the budget.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jsonschema
import llguidance

from llmasos.engine.schema_bounds import Bounds, fit
from llmasos.engine.schema_keywords import (
    ALL_KEYWORDS,
    ANNOTATIONS,
    COMMON,
    DEFINITIONS,
    FORMATS,
    KEYWORDS,
    MAX_DEPTH,
    TYPES,
    fail,
    resolve_ref,
)

__all__ = ["FORMATS", "Bounds", "check_schema", "fit_to_budget", "grammar_text"]


def check_schema(schema: object, path: str = "$") -> None:
    """Raise InvalidSchemaError (a 400) naming the JSON path unless `schema` is valid JSON Schema,
    uses only the accepted keywords, and compiles in llguidance."""
    if not isinstance(schema, dict | bool):
        fail(path, f"a schema must be a JSON object, got {type(schema).__name__}")
    _check_meta(schema, path)
    _check_node(schema, schema, path, 0)
    _compile(schema, path)


def _check_meta(schema: dict | bool, path: str) -> None:
    """Malformed keyword values (`"minLength": -1`, `"required": "x"`), from the metaschema."""
    meta = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    error = jsonschema.exceptions.best_match(meta.iter_errors(schema))
    if error is not None:
        where = path + "".join(f"/{part}" for part in error.absolute_path)
        if list(error.absolute_path)[-1:] == ["type"]:  # the metaschema's own words say little here
            fail(
                where, f"'type' must be one of {', '.join(TYPES)} (or a list of them), got {error.instance!r}"
            )
        fail(where, error.message)


def _check_node(node: object, root: dict | bool, path: str, depth: int) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        fail(path, f"a schema must be a JSON object or a boolean, got {type(node).__name__}")
    if depth > MAX_DEPTH:
        fail(path, f"nested deeper than {MAX_DEPTH} levels")
    _check_keywords(node, path)
    if "$ref" in node:
        resolve_ref(root, node["$ref"], f"{path}/$ref")
    if "allOf" in node and len(node["allOf"]) != 1:
        fail(f"{path}/allOf", "allOf with more than one schema is not supported; merge them into one")
    _check_object(node, path)
    _check_string(node, path)
    _check_number(node, path)
    for key, sub in _subschemas(node):
        _check_node(sub, root, f"{path}/{key}", depth + 1)


def _check_keywords(node: dict, path: str) -> None:
    for key in node:
        if key not in ALL_KEYWORDS:
            fail(
                f"{path}/{key}",
                f"keyword {key!r} is not supported by constrained decoding; supported: "
                f"{', '.join(sorted(ALL_KEYWORDS - ANNOTATIONS))} (and annotations)",
            )
    kinds = node.get("type")
    if kinds is None:
        return
    kinds = [kinds] if isinstance(kinds, str) else kinds
    applicable = COMMON.union(*(KEYWORDS[k] for k in kinds))
    for key in node:
        if key not in applicable:
            fail(f"{path}/{key}", f"keyword {key!r} does not apply to type {' or '.join(kinds)}")


def _check_object(node: dict, path: str) -> None:
    properties = node.get("properties", {})
    for name in node.get("required", []):
        if name not in properties:
            fail(f"{path}/required", f"required property {name!r} is not in 'properties'")


def _check_string(node: dict, path: str) -> None:
    if "format" in node and node["format"] not in FORMATS:
        fail(
            f"{path}/format",
            f"format {node['format']!r} is not supported; supported: {', '.join(sorted(FORMATS))}",
        )
    if "pattern" in node:
        _compile({"type": "string", "pattern": node["pattern"]}, f"{path}/pattern")
    if node.get("minLength", 0) > node.get("maxLength", math.inf):
        fail(path, f"'minLength' ({node['minLength']}) is larger than 'maxLength' ({node['maxLength']})")


def _check_number(node: dict, path: str) -> None:
    if "multipleOf" in node and "type" in node and node["multipleOf"] <= 0:
        fail(f"{path}/multipleOf", f"'multipleOf' must be positive, got {node['multipleOf']!r}")


def _subschemas(node: dict) -> list[tuple[str, Any]]:
    """(relative path, subschema) of each schema directly inside `node`."""
    found: list[tuple[str, Any]] = []
    for key in ("properties", *DEFINITIONS):
        found += [(f"{key}/{name}", sub) for name, sub in node.get(key, {}).items()]
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        found += [(f"{key}/{i}", sub) for i, sub in enumerate(node.get(key, []))]
    for key in ("items", "additionalProperties"):
        if key in node:
            found.append((key, node[key]))
    return found


@functools.cache
def _byte_tokenizer() -> llguidance.LLTokenizer:
    # A 256-token byte vocabulary: enough to compile and check a grammar before any model is loaded.
    return llguidance.LLTokenizer("byte")


#: Compact JSON: no free whitespace (a model could emit it forever), and only the two-byte escapes,
#: so that one character costs at most four bytes (schema_bounds.BYTES_PER_CHAR).
JSON_OPTIONS = {"whitespace_flexible": False, "json_allowed_escapes": '"\\bfnrt'}


def grammar_text(schema: dict) -> str:
    return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)


def _compile(schema: dict | bool, path: str) -> None:
    if isinstance(schema, bool):  # true: any value; false: none (refused when it is bounded)
        return
    try:
        error = llguidance.LLMatcher.validate_grammar(grammar_text(schema), _byte_tokenizer())
    except (ValueError, TypeError, RuntimeError) as raised:  # what it cannot even parse
        error = str(raised)
    if error and not error.startswith("WARNING"):
        fail(path, f"the grammar engine cannot compile it: {error.strip()}")


def fit_to_budget(schema: object, budget_bytes: int) -> tuple[dict, Bounds]:
    """Check `schema`, then bound it as loosely as `budget_bytes` allows (see `schema_bounds`)."""
    check_schema(schema)
    return fit(schema, budget_bytes)  # type: ignore[arg-type]
