"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): besides the bodies it generates from the
schema, send each as an attacker would: every string with a lone surrogate, nested past any sane
depth, and larger than the server's body limit. None of them may get a 5xx."""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

#: The test server's body limit (the fixture sets it); an oversized body is a little more than it.
BODY_LIMIT = int(os.environ.get("LLMASOS_TEST_BODY_LIMIT", "65536"))


def with_lone_surrogates(value: Any) -> Any:
    """Every string (keys too) with a lone surrogate in it; sent as the `\\ud800` escape."""
    if isinstance(value, str):
        return value + "\ud800"
    if isinstance(value, dict):
        return {with_lone_surrogates(k): with_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_lone_surrogates(v) for v in value]
    return value


def _with_field(value: Any, raw_field: str) -> bytes:
    """The body's JSON with one more field spelled as raw JSON text (for what json.dumps cannot write)."""
    text = json.dumps(value)
    if isinstance(value, dict) and value:
        return (text[:-1] + ', "extra": ' + raw_field + "}").encode()
    if isinstance(value, dict):
        return ('{"extra": ' + raw_field + "}").encode()
    return raw_field.encode()


def nested(value: Any, depth: int) -> bytes:
    return _with_field(value, "[" * depth + "]" * depth)


def oversized(value: Any) -> bytes:
    return _with_field(value, '"' + "x" * (BODY_LIMIT + 1024) + '"')


MUTATIONS = {
    "as generated": lambda body: body,
    "surrogates": lambda body: json.dumps(with_lone_surrogates(body)).encode(),  # ASCII: \ud800 escapes
    "nested 40": lambda body: nested(body, 40),
    "nested 5000": lambda body: nested(body, 5000),
    "oversized": oversized,
}


@schemathesis.hook
def flatmap_case(context, case):
    """Each generated case, also as each mutation of its body, as raw JSON bytes (schemathesis' own
    checks of a case cannot take a lone surrogate in a str)."""
    if case.body is None or not isinstance(case.body, dict | list | str):
        return st.just(case)

    def mutated(kind: str):
        case.body = MUTATIONS[kind](case.body)
        return case

    return st.sampled_from(list(MUTATIONS)).map(mutated)
