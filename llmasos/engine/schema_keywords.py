"""The vocabulary of the JSON Schema that constrained decoding accepts: keywords, formats, references.

Shared by the check at arrival (`json_schema`) and the bounding (`schema_bounds`).
"""

from __future__ import annotations

from typing import Any

from llmasos.errors import InvalidSchemaError

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "$anchor",
        "deprecated",
        "readOnly",
        "writeOnly",
        "discriminator",  # pydantic's tagged unions: the branches' const tags carry the constraint
        "contentMediaType",
        "contentEncoding",
    }
)
DEFINITIONS = ("$defs", "definitions")
#: Keywords every schema may carry, whatever its type.
COMMON = frozenset({"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", *DEFINITIONS}) | ANNOTATIONS
KEYWORDS = {
    "object": {"properties", "required", "additionalProperties", "minProperties", "maxProperties"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "boolean": set(),
    "null": set(),
}
ALL_KEYWORDS = COMMON | set().union(*KEYWORDS.values())
#: String formats llguidance generates, with the characters a bounded string keeps for them: room
#: for common values, not every valid one (the bound only narrows: what is generated stays valid).
FORMATS = {
    "date-time": 25,  # 2020-01-01T00:00:00+00:00
    "date": 10,
    "time": 14,  # 00:00:00+00:00
    "duration": 16,
    "email": 24,
    "hostname": 24,
    "ipv4": 15,
    "ipv6": 39,
    "uuid": 36,
    "uri": 32,
}
MAX_DEPTH = 32  # nesting of the schema document itself


def fail(path: str, message: str) -> None:
    raise InvalidSchemaError(f"the JSON schema is not usable at {path}: {message}")


def resolve_ref(root: dict | bool, ref: object, path: str) -> Any:
    """The schema a local `$ref` (a JSON pointer in this document) names."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        fail(path, f"only local references ('#/$defs/Name') are supported, got {ref!r}")
    target: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            fail(path, f"{ref!r} points at nothing in the schema")
    if not isinstance(target, dict | bool):
        fail(path, f"{ref!r} does not point at a schema")
    return target
