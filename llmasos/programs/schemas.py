"""JSON Schema checks for programs, with `jsonschema`: messages that name the bad field and say
what was expected, so a caller can fix the request without reading the schema."""

from __future__ import annotations

from typing import Any

import jsonschema

from llmasos.errors import InvalidRequestError

Validator = jsonschema.Draft202012Validator


def compile_schema(schema: Any, what: str) -> jsonschema.protocols.Validator:
    """A validator for `schema`; InvalidRequestError naming `what` if it is not valid JSON Schema."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{what} must be a JSON Schema object, got {type(schema).__name__}")
    try:
        Validator.check_schema(schema)
    except jsonschema.SchemaError as err:
        raise InvalidRequestError(f"{what} is not valid JSON Schema: {err.message}") from None
    return Validator(schema)


def first_error(validator: jsonschema.protocols.Validator, value: Any) -> jsonschema.ValidationError | None:
    """The most relevant error of `value`, or None if it is valid."""
    return jsonschema.exceptions.best_match(validator.iter_errors(value))


def field_path(error: jsonschema.ValidationError, root: str = "") -> str:
    """Where an error is, as `root.texts[2]` or `image.path`; a missing or extra property is named."""
    parts: list[str | int] = list(error.absolute_path)
    if error.validator in ("required", "additionalProperties") and error.message.count("'") >= 2:
        parts.append(error.message.split("'")[1])
    path = root
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f"{'.' if path else ''}{part}"
    return path


def signature(schema: dict) -> str:
    """A short `{name: type, ...}` of an object schema's properties, optional ones marked."""
    required = set(schema.get("required", ()))
    parts = []
    for key, sub in (schema.get("properties") or {}).items():
        kind = sub.get("type") or ("one of " + "/".join(map(str, sub["enum"])) if "enum" in sub else "any")
        if isinstance(kind, list):
            kind = "|".join(kind)
        parts.append(f"{key}: {kind}{'' if key in required else ' (optional)'}")
    return "{" + ", ".join(parts) + "}"


def defaults_of(schema: dict) -> dict:
    """The `default` of each top-level property of an object schema that has one."""
    return {k: s["default"] for k, s in (schema.get("properties") or {}).items() if "default" in s}
