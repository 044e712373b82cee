"""The `calculator` tool: arithmetic evaluated over Python's `ast`, never `eval`.

Only numbers, + - * / // % **, parentheses, a few named constants and a list of math functions are
accepted; anything else (names, attributes, strings, comprehensions, ...) is refused with a clear
error. Percentages read as people write them: "17% of 2,340" is 0.17 * 2340 and "15%" alone is 0.15;
"7 % 3" (a space, then a number) is the remainder. Exponents and factorials are bounded so that no
expression can hang the process.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import ClassVar

from llmasos.errors import InvalidRequestError
from llmasos.tools.base import Tool, ToolContext, ToolResult

MAX_EXPRESSION_CHARS = 500
# Results must fit a float (the JSON number of the result); bigger integers are refused before computing.
MAX_RESULT_DIGITS = 308
MAX_FACTORIAL = 170  # 171! is past 1e308

_BINARY: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _factorial(x: float) -> int:
    if x != int(x) or x < 0:
        raise InvalidRequestError(f"factorial needs a whole number >= 0, got {x}")
    if x > MAX_FACTORIAL:
        raise InvalidRequestError(f"factorial of {int(x)} is too large; the limit is {MAX_FACTORIAL}")
    return math.factorial(int(x))


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS: dict[str, Callable] = {
    "sqrt": math.sqrt,
    "cbrt": math.cbrt,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "min": min,
    "max": max,
    "exp": math.exp,
    "ln": math.log,
    "log": _log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "degrees": math.degrees,
    "radians": math.radians,
    "factorial": _factorial,
    "hypot": math.hypot,
}

# Words and symbols people type, rewritten to Python operators before parsing.
_REWRITES = [
    (re.compile(r"^\s*(what\s+is|what's|calculate|compute|evaluate)\s+", re.I), ""),
    (re.compile(r"[?=]+\s*$"), ""),
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""),  # thousands separators: 2,340 -> 2340
    (re.compile(r"(\d+(?:\.\d+)?)\s*%\s*of\b", re.I), r"(\1/100)*"),  # 17% of X
    (re.compile(r"(\d+(?:\.\d+)?)%(?!\s*[\d(.])"), r"(\1/100)"),  # 15% standing alone
    (re.compile(r"\bdivided\s+by\b", re.I), "/"),
    (re.compile(r"\b(multiplied\s+by|times)\b", re.I), "*"),
    (re.compile(r"\bplus\b", re.I), "+"),
    (re.compile(r"\bminus\b", re.I), "-"),
    (re.compile(r"\bmod\b", re.I), "%"),
    (re.compile(r"(?<=[\d)\s])x(?=[\s\d(])"), "*"),  # 3 x 4
    (re.compile("[×·]"), "*"),
    (re.compile("÷"), "/"),
    (re.compile(r"\^"), "**"),
]


def normalize(expression: str) -> str:
    """The expression with percentages, words, thousands separators and symbols rewritten."""
    text = expression.strip()
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text.strip()


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; InvalidRequestError for anything else."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidRequestError(
            f"expression is {len(expression)} characters; the calculator takes at most {MAX_EXPRESSION_CHARS}"
        )
    text = normalize(expression)
    if not text:
        raise InvalidRequestError("the expression is empty; give arithmetic such as '17% of 2,340'")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        raise InvalidRequestError(
            f"cannot read {expression!r} as arithmetic; use numbers, + - * / ** %, parentheses and "
            f"functions such as sqrt(2) (separate function arguments with ', ')"
        ) from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise InvalidRequestError(f"{expression!r} divides by zero") from None
    except (OverflowError, RecursionError):
        raise InvalidRequestError(f"{expression!r} is too large to compute") from None
    except (ValueError, TypeError) as err:
        raise InvalidRequestError(f"cannot compute {expression!r}: {err}") from None
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        raise InvalidRequestError(f"{expression!r} has no finite real value")
    return value


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise _refuse(node, "only numbers are allowed")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        if isinstance(node.op, ast.Mult):
            _check_digits(_digits(left) + _digits(right))
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise _refuse(node, f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = FUNCTIONS.get(node.func.id)
        if function is None:
            raise _refuse(node, f"unknown function {node.func.id!r}; functions: {', '.join(FUNCTIONS)}")
        return function(*[_eval(arg) for arg in node.args])
    raise _refuse(node, "only arithmetic is allowed")


def _refuse(node: ast.AST, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"the calculator refuses {ast.unparse(node)!r}: {why}")


def _digits(x: int | float) -> int:
    return len(str(abs(int(x)))) if isinstance(x, int) else 0


def _check_digits(digits: int) -> None:
    if digits > MAX_RESULT_DIGITS:
        raise InvalidRequestError(
            f"the result would have about {digits} digits; the limit is {MAX_RESULT_DIGITS}"
        )


def _check_power(base: int | float, exponent: int | float) -> None:
    """Refuse powers whose result would be too big to compute quickly (10**10**10 would hang)."""
    if abs(base) in (0, 1):
        return
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        _check_digits(int(exponent * math.log10(abs(base))) + 1)
    elif abs(exponent) * math.log10(abs(base)) > 308:  # float powers overflow past 1e308 anyway
        raise OverflowError


def format_value(value: int | float) -> str:
    """A readable form: integers as they are, floats to 12 significant digits without noise."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value) if isinstance(value, int) else f"{value:.12g}"


class CalculatorTool(Tool):
    name = "calculator"
    description = (
        "Evaluate arithmetic: + - * / ** %, parentheses, percentages ('17% of 2,340'), "
        "and functions such as sqrt, log, sin, round, min, max. Use it for any calculation."
    )
    examples: ClassVar[tuple[str, ...]] = (
        "What is 45 times 12?",
        "Calculate the square root of 144",
        "How much is 15 percent of 80?",
        "Add 1,250 and 3,400",
        "Divide 100 by 7",
    )
    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EXPRESSION_CHARS,
                "description": "the arithmetic to evaluate, e.g. '17% of 2,340' or '(3 + 4) * 2 ** 10'",
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "expression": {"type": "string"},
            "normalized": {"type": "string"},
            "value": {"type": "number"},
            "text": {"type": "string"},
        },
        "required": ["expression", "normalized", "value", "text"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        expression = args["expression"]
        value = evaluate(expression)
        try:  # JSON numbers past 2**53 lose precision as floats anyway; `text` keeps the exact integer
            number = value if isinstance(value, float) or abs(value) < 2**53 else float(value)
        except OverflowError:
            raise InvalidRequestError(
                f"{expression!r} is larger than 1e308, the calculator's limit"
            ) from None
        output = {
            "expression": expression,
            "normalized": normalize(expression),
            "value": number,
            "text": format_value(value),
        }
        return ToolResult(self.name, output)
