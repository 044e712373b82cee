"""The calculator: arithmetic as people write it, and a refusal for anything that is not arithmetic."""

from __future__ import annotations

import math

import pytest

from llmasos.errors import InvalidRequestError
from llmasos.security.apps import App
from llmasos.tools.calculator import evaluate
from llmasos.tools.registry import ToolContext, default_registry


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("17% of 2,340", 397.8),
        ("what is 17% of 2,340?", 397.8),
        ("15%", 0.15),
        ("200 * 15%", 30.0),
        ("7 % 3", 1),
        ("(3 + 4) * 2 ** 10", 7168),
        ("2^10", 1024),
        ("3 x 4", 12),
        ("12 ÷ 4 × 2", 6.0),
        ("10 divided by 4", 2.5),
        ("6 times 7 minus 2", 40),
        ("1,234,567 + 1", 1234568),
        ("-(-3) + +2", 5),
        ("7 // 2", 3),
        ("sqrt(2) * sqrt(2)", pytest.approx(2.0)),
        ("max(3, 7, 5) - min(4, 1)", 6),
        ("round(pi, 3)", 3.142),
        ("log(8, 2) + log10(1000) + ln(e)", pytest.approx(7.0)),
        ("factorial(10)", 3628800),
        ("sin(radians(30))", pytest.approx(0.5)),
        ("1e3 / 8", 125.0),
    ],
)
def test_evaluates(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("__import__('os').system('echo pwned')", "only arithmetic"),
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__.__bases__", "only arithmetic"),
        ("open('/etc/passwd').read()", "only arithmetic"),
        ("print(1)", "unknown function 'print'"),
        ("'a' * 3", "only numbers"),
        ("[1, 2, 3]", "only arithmetic"),
        ("lambda: 1", "only arithmetic"),
        ("x + 1", "unknown name 'x'"),
        ("True + 1", "only numbers"),
        ("import os", "cannot read"),
        ("1 +", "cannot read"),
        ("sqrt(x=4)", "only arithmetic"),
        ("1 / 0", "divides by zero"),
        ("sqrt(-1)", "cannot compute"),
        ("2 ** 10 ** 10", "digits"),
        ("9 ** 9 ** 9", "digits"),
        ("factorial(100000)", "too large"),
        ("factorial(2.5)", "whole number"),
        ("2.0 ** 5000", "too large"),
        ("10 ** 300 * 10 ** 300", "digits"),
        ("exp(1000)", "too large"),
        ("(" * 240 + "1" + ")" * 240, "cannot read"),
        ("1" * 600, "at most"),
    ],
)
def test_refuses_anything_but_arithmetic_with_a_clear_error(expression: str, why: str) -> None:
    with pytest.raises(InvalidRequestError, match=why):
        evaluate(expression)


def test_the_tool_reports_value_text_and_the_rewritten_expression() -> None:
    result = default_registry().call("calculator", {"expression": "17% of 2,340"}, ToolContext(App("a")))
    assert result.output["value"] == pytest.approx(397.8)
    assert result.output["text"] == "397.8"
    assert result.output["normalized"] == "(17/100)* 2340"
    big = default_registry().call("calculator", {"expression": "2 ** 100"}, ToolContext(App("a")))
    assert big.output["text"] == str(2**100) and math.isclose(big.output["value"], 2.0**100)


def test_an_empty_expression_is_refused_by_the_schema() -> None:
    with pytest.raises(InvalidRequestError, match="field 'expression'"):
        default_registry().call("calculator", {"expression": ""}, ToolContext(App("a")))
