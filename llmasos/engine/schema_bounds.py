"""Bounding a checked JSON schema so that every value it allows fits a byte budget.

A constrained generation only yields a complete value if it ends before its token budget, and a
model (a random one, or a real one stuck in a loop) may go on inside a string, an array or a
recursive structure forever. `fit` gives llguidance a self-contained copy of the schema that only
*narrows* the original (everything it accepts, the original accepts):

1. `expand`: references are inlined, a recursive one followed at most `recursion` times more along a
   path (beyond that the branch is dropped: an optional property is left out, an array stays empty,
   an anyOf branch goes); type lists become anyOf; `{}` becomes any scalar; extra properties are
   never generated.
2. `bounded`: every string gets a maxLength (room for its format or pattern kept), every array a
   maxItems, numbers a range within +-1e15 and at most six decimals.
3. `worst_case_bytes`: the longest compact value the bounded copy allows. A token is at least one
   byte, so a value of at most budget bytes always completes within budget tokens.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jsonschema

from llmasos.engine.schema_keywords import (
    ANNOTATIONS,
    DEFINITIONS,
    FORMATS,
    KEYWORDS,
    fail,
    resolve_ref,
)
from llmasos.errors import InvalidSchemaError

#: Generated numbers stay within +-NUMBER_LIMIT and have at most NUMBER_DECIMALS decimals.
NUMBER_LIMIT = 10**15
NUMBER_DECIMALS = 6
#: Largest string length and array size given to strings/arrays that set none (lowered to fit).
DEFAULT_MAX_LENGTH = 512
DEFAULT_MAX_ITEMS = 16
COMFORTABLE_LENGTH = 64  # fewer array elements are preferred to strings shorter than this
#: Bytes one character of a JSON string can take: four in UTF-8; escapes are limited to two-byte ones.
BYTES_PER_CHAR = 4
#: Times a recursive reference may be followed again along one path, most first (lowered to fit).
RECURSION_LIMITS = (3, 2, 1, 0)
#: Subschemas one expansion may produce: repeated references multiply, and every bound is a walk.
MAX_NODES = 4000
#: What `{}` (any value) and an array without `items` generate: any scalar, a narrowing that stays valid.
SKIPPED = ANNOTATIONS | set(DEFINITIONS)  # kept out of the bounded copy
ANY_SCALAR = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}


@dataclass(frozen=True)
class Bounds:
    """The limits `fit` chose, and the longest value (bytes) they allow."""

    max_length: int  # strings without a smaller maxLength get this one (or their format's room)
    max_items: int  # arrays without maxItems get this one
    worst_case_bytes: int
    recursion: int = 0  # times a recursive reference is followed again along a path


# ---- expanding --------------------------------------------------------------------------------


@dataclass
class _Expansion:
    root: Any
    recursion: int
    nodes: int = 0
    was_cut: bool = False  # a recursive reference was dropped (a higher limit would differ)
    refs: tuple[str, ...] = field(default_factory=tuple)


def expand(schema: dict | bool, recursion: int) -> tuple[dict | None, bool]:
    """The checked `schema` without references, type lists or composition other than anyOf
    (None: it has no finite value), and whether a recursive reference was cut."""
    state = _Expansion(schema, recursion)
    return _expand(schema, state, ()), state.was_cut


def _expand(node: Any, state: _Expansion, refs: tuple[str, ...]) -> dict | None:
    state.nodes += 1
    if state.nodes > MAX_NODES:
        fail("$", f"it expands to more than {MAX_NODES} subschemas (references repeat or nest); simplify it")
    if node is False:
        return None
    node = {k: v for k, v in (node if isinstance(node, dict) else {}).items() if k not in SKIPPED}
    if "$ref" in node:
        ref = node.pop("$ref")
        if refs.count(ref) > state.recursion:
            state.was_cut = True
            return None
        target = resolve_ref(state.root, ref, "$")
        if target is False:
            return None
        return _expand(_merge(target if isinstance(target, dict) else {}, node), state, (*refs, ref))
    if "allOf" in node:
        (only,) = node.pop("allOf")
        return None if only is False else _expand(_merge(node, _as_dict(only)), state, refs)
    for key in ("anyOf", "oneOf"):  # oneOf is generated as anyOf (tagged unions stay exclusive)
        if key in node:
            branches = node.pop(key)
            kept = [b for b in branches if b is not False]
            return _union([_expand(_merge(node, _as_dict(b)), state, refs) for b in kept])
    if "enum" in node or "const" in node:
        return _enum(node)
    kinds = node.get("type") or _implied_types(node)
    if not kinds:
        return _expand(ANY_SCALAR, state, refs)
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return _union([_single(kind, node, state, refs) for kind in kinds])


def _as_dict(schema: dict | bool) -> dict:
    return schema if isinstance(schema, dict) else {}  # true: no constraint (false is dropped before)


def _merge(base: dict, extra: dict) -> dict:
    """`extra`'s keywords over `base`'s; `required` lists and `properties` maps are joined."""
    out = {k: v for k, v in base.items() if k not in DEFINITIONS}
    for key, value in extra.items():
        if key == "required" and key in out:
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key == "properties" and key in out:
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _union(branches: list[dict | None]) -> dict | None:
    kept: list[dict] = []
    for branch in branches:
        if branch is not None:
            kept += branch["anyOf"] if set(branch) == {"anyOf"} else [branch]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else {"anyOf": kept}


def _enum(node: dict) -> dict | None:
    values = [node["const"]] if "const" in node else list(node["enum"])
    rest = {k: v for k, v in node.items() if k not in ("enum", "const")}
    if not rest:
        return {"enum": values}
    # {"type": "string", "enum": ["a", 1]}: only "a" is valid.
    validator = jsonschema.Draft202012Validator(rest)
    try:
        values = [v for v in values if validator.is_valid(v)]
    except re.error:  # a pattern in Rust's syntax that Python's `re` cannot read: llguidance intersects
        return {"enum": values, **rest}
    return {"enum": values} if values else None


def _implied_types(node: dict) -> list[str]:
    return [k for k in ("object", "array", "string", "number") if KEYWORDS[k] & node.keys()]


def _single(kind: str, node: dict, state: _Expansion, refs: tuple[str, ...]) -> dict | None:
    out = {"type": kind, **{k: node[k] for k in KEYWORDS[kind] if k in node}}
    if kind == "object":
        return _object(out, state, refs)
    if kind == "array":
        return _array(out, state, refs)
    return out


def _object(out: dict, state: _Expansion, refs: tuple[str, ...]) -> dict | None:
    required = out.get("required", [])
    properties = {}
    for name, sub in out.get("properties", {}).items():
        expanded = _expand(sub, state, refs)
        if expanded is not None:
            properties[name] = expanded
        elif name in required:
            return None
    out["properties"] = properties
    out["additionalProperties"] = False  # extra keys are never generated: a narrowing
    if out.get("minProperties", 0) > len(properties) or out.get("maxProperties", math.inf) < len(required):
        return None
    return out


def _array(out: dict, state: _Expansion, refs: tuple[str, ...]) -> dict | None:
    prefix = []
    for sub in out.pop("prefixItems", []):
        expanded = _expand(sub, state, refs)
        if expanded is None:
            out["maxItems"] = min(out.get("maxItems", math.inf), len(prefix))
            break
        prefix.append(expanded)
    if prefix:
        out["prefixItems"] = prefix
    items = out.pop("items", None if prefix else {})
    room_after_prefix = out.get("maxItems", math.inf) > len(prefix)
    expanded = _expand(items, state, refs) if items is not None and room_after_prefix else None
    if expanded is None:  # nothing may follow the prefix
        out["maxItems"] = min(out.get("maxItems", math.inf), len(prefix))
        out["items"] = False
    else:
        out["items"] = expanded
    if out.get("minItems", 0) > out.get("maxItems", math.inf):
        return None
    return out


# ---- bounding ---------------------------------------------------------------------------------


def bounded(schema: dict, max_length: int, max_items: int) -> dict:
    """A copy of an expanded `schema` in which every string, array and number is bounded."""
    if "anyOf" in schema:
        return {"anyOf": [bounded(b, max_length, max_items) for b in schema["anyOf"]]}
    if "enum" in schema:
        return schema
    out = dict(schema)
    kind = schema["type"]
    if kind == "object":
        out["properties"] = {k: bounded(v, max_length, max_items) for k, v in schema["properties"].items()}
    elif kind == "array":
        if "prefixItems" in schema:
            out["prefixItems"] = [bounded(s, max_length, max_items) for s in schema["prefixItems"]]
        if schema["items"] is not False:
            out["items"] = bounded(schema["items"], max_length, max_items)
        wanted = max(max_items, schema.get("minItems", 0), len(schema.get("prefixItems", [])))
        out["maxItems"] = min(schema.get("maxItems", wanted), wanted)
    elif kind == "string":
        room = max(max_length, schema.get("minLength", 0), _string_room(schema))
        out["maxLength"] = min(schema.get("maxLength", room), room)
    elif kind in ("number", "integer"):
        out.update(bounded_number(schema))
    return out


def _string_room(schema: dict) -> int:
    """Characters a string's format or pattern needs at least (beyond what the budget gives)."""
    if "format" in schema:
        return FORMATS[schema["format"]]
    if "pattern" in schema:
        return _pattern_width(schema["pattern"])[0]
    return 0


def _pattern_width(pattern: str) -> tuple[int, float]:
    """(fewest, most) characters `pattern` matches, from Python's regex parser (llguidance's syntax
    is Rust's, nearly the same; where Python cannot parse it, (1, inf))."""
    try:
        low, high = re._parser.parse(pattern).getwidth()  # type: ignore[attr-defined]
    except (re.error, ValueError, OverflowError, AttributeError, RecursionError):
        return 1, math.inf
    return low, math.inf if high >= 2**31 - 2 else high


def bounded_number(schema: dict) -> dict:
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
    if "anyOf" in schema:
        return max(worst_case_bytes(b) for b in schema["anyOf"])
    if "enum" in schema:
        return max(_literal_bytes(v) for v in schema["enum"])
    kind = schema["type"]
    if kind == "object":
        properties = schema["properties"]
        keys = sum(len(json.dumps(k, ensure_ascii=False).encode()) + 1 for k in properties)
        return 2 + keys + sum(worst_case_bytes(v) for v in properties.values()) + max(len(properties) - 1, 0)
    if kind == "array":
        return _array_bytes(schema)
    if kind == "string":
        widest = _pattern_width(schema["pattern"])[1] if "pattern" in schema else math.inf
        length = min(schema["maxLength"], widest)
        return 2 + BYTES_PER_CHAR * int(length)
    if kind in ("number", "integer"):
        return _number_bytes(schema)
    return {"boolean": 5, "null": 4}[kind]


def _array_bytes(schema: dict) -> int:
    n = schema["maxItems"]
    prefix = schema.get("prefixItems", [])[:n]
    rest = n - len(prefix) if schema["items"] is not False else 0
    elements = sum(worst_case_bytes(s) for s in prefix) + (rest and rest * worst_case_bytes(schema["items"]))
    return 2 + elements + max(len(prefix) + rest - 1, 0)


def _number_bytes(schema: dict) -> int:
    low = max(schema.get("minimum", -math.inf), schema.get("exclusiveMinimum", -math.inf))
    high = min(schema.get("maximum", math.inf), schema.get("exclusiveMaximum", math.inf))
    digits = len(str(int(max(abs(low), abs(high)))))
    decimals = _decimals(schema["multipleOf"]) if "multipleOf" in schema else 0
    if schema["type"] == "number" and decimals:
        digits += 1 + decimals
    return 1 + digits  # the sign


def _decimals(value: float) -> int:
    return max(0, -int(Decimal(repr(value)).normalize().as_tuple().exponent))


def _literal_bytes(value: object) -> int:
    if isinstance(value, str):  # any character may come escaped as \uXXXX (UTF-16 units)
        return 2 + 6 * (len(value.encode("utf-16-le")) // 2)
    if isinstance(value, list):
        return 2 + sum(_literal_bytes(v) for v in value) + max(len(value) - 1, 0)
    if isinstance(value, dict):
        pairs = sum(_literal_bytes(k) + 1 + _literal_bytes(v) for k, v in value.items())
        return 2 + pairs + max(len(value) - 1, 0)
    return len(json.dumps(value))


# ---- fitting ----------------------------------------------------------------------------------


def fit(schema: dict | bool, budget_bytes: int) -> tuple[dict, Bounds]:
    """Bound a checked `schema` as loosely as `budget_bytes` allows.

    Arrays without maxItems get 16 elements, or fewer where that leaves strings shorter than
    COMFORTABLE_LENGTH characters; recursion is followed up to three times again, or less.
    InvalidSchemaError when even one-character strings, one-element arrays and no recursion do
    not fit, saying the budget that would.
    """
    expansions = _expansions(schema)
    fits = []
    for recursion, core in expansions:
        for max_items in (DEFAULT_MAX_ITEMS, 8, 4, 2, 1):
            length = _longest_fitting_length(core, max_items, budget_bytes)
            if length is not None:
                fits.append((min(length, COMFORTABLE_LENGTH), recursion, max_items, length, core))
                if length >= COMFORTABLE_LENGTH:
                    break
        if fits and fits[-1][0] >= COMFORTABLE_LENGTH:  # the most recursion that is comfortable
            break
    if not fits:
        smallest = worst_case_bytes(bounded(expansions[-1][1], 1, 1))
        raise InvalidSchemaError(
            f"the schema's values can be {smallest} bytes long even with one-character strings, "
            f"one-element arrays and no recursion, more than the budget of {budget_bytes} tokens; set "
            f"max_tokens to at least {smallest + 1}, or give smaller maxLength/maxItems or fewer properties"
        )
    _, recursion, max_items, length, core = max(fits, key=lambda f: f[:3])
    result = bounded(core, length, max_items)
    return result, Bounds(length, max_items, worst_case_bytes(result), recursion)


def _expansions(schema: dict | bool) -> list[tuple[int, dict]]:
    """(recursion, expanded schema) from the most recursion down; one entry if nothing recurses."""
    found = []
    for recursion in RECURSION_LIMITS:
        core, was_cut = expand(schema, recursion)
        if core is None:
            break
        found.append((recursion, core))
        if not was_cut:
            break
    if not found:
        fail("$", "no value satisfies it: a required property or item refers to itself, or is false")
    return found


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
