"""Attribute filters in OpenAI's shape, checked once and then applied to each file's attributes.

A comparison: `{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key": str, "value": ...}`;
a compound: `{"type": "and"|"or", "filters": [...]}`. A file without the key never matches a
comparison (but does match `ne` and `nin`, as "not equal" holds).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from llmasos.errors import InvalidRequestError

Predicate = Callable[[dict], bool]

_ORDERED = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_SCALARS = (str, int, float, bool)
MAX_DEPTH = 8


def compile_filter(spec: Any, depth: int = 0) -> Predicate:
    """A predicate over an attributes dict; InvalidRequestError naming what is wrong otherwise."""
    if spec is None:
        return lambda attributes: True
    if depth > MAX_DEPTH:
        raise InvalidRequestError(f"filters nest deeper than {MAX_DEPTH} levels; flatten them")
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise InvalidRequestError(
            'a filter must be an object with a "type" (eq, ne, gt, gte, lt, lte, in, nin, and, or)'
        )
    kind = spec["type"]
    if kind in ("and", "or"):
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise InvalidRequestError(f'an "{kind}" filter needs a non-empty list "filters"')
        predicates = [compile_filter(part, depth + 1) for part in parts]
        combine = all if kind == "and" else any
        return lambda attributes: combine(p(attributes) for p in predicates)
    key, value = spec.get("key"), spec.get("value")
    if not isinstance(key, str) or not key:
        raise InvalidRequestError(f'a "{kind}" filter needs a string "key"')
    if kind in ("eq", "ne"):
        _require_scalar(kind, value)
        equal = lambda a: key in a and a[key] == value  # noqa: E731
        return equal if kind == "eq" else (lambda a: not equal(a))
    if kind in _ORDERED:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequestError(f'a "{kind}" filter compares numbers; give "value" as a number')
        compare = _ORDERED[kind]
        return lambda a: (
            isinstance(a.get(key), int | float)
            and not isinstance(a.get(key), bool)
            and compare(a[key], value)
        )
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(isinstance(v, _SCALARS) for v in value):
            raise InvalidRequestError(
                f'an "{kind}" filter needs "value" as a list of strings, numbers or booleans'
            )
        member = lambda a: key in a and a[key] in value  # noqa: E731
        return member if kind == "in" else (lambda a: not member(a))
    raise InvalidRequestError(
        f"unknown filter type {kind!r}; use eq, ne, gt, gte, lt, lte, in, nin, and or or"
    )


def _require_scalar(kind: str, value: Any) -> None:
    if not isinstance(value, _SCALARS):
        raise InvalidRequestError(f'an "{kind}" filter needs "value" as a string, number or boolean')
