"""Any JSON object, as a grammar whose longest value fits a byte budget (`response_format` json_object).

A schema cannot bound free keys, so the grammar is written in llguidance's Lark dialect: objects and
arrays nested at most `depth` levels, at most `members` members each, keys of at most `length`
ASCII characters, strings of at most `length` characters, numbers within +-1e15 with at most six
decimals. `json_object_grammar` picks the loosest such bounds that fit: first depth and members
with strings of at least PREFERRED_LENGTH characters, then SHORT_LENGTH, else the longest strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmasos.errors import InvalidSchemaError

#: (depth, members) tried in order of preference; the first whose strings reach PREFERRED_LENGTH wins.
SHAPES = ((2, 8), (2, 4), (1, 8), (1, 4), (1, 2), (1, 1))
PREFERRED_LENGTH = 16
SHORT_LENGTH = 8
MAX_LENGTH = 512
NUMBER_BYTES = 1 + 15 + 1 + 6  # sign, integer digits, point, decimals
BYTES_PER_CHAR = 4  # UTF-8; escapes are two bytes

_SCALARS = r"""
scalar: STRING | NUMBER | "true" | "false" | "null"
STRING: /"([^"\\\x00-\x1f]|\\["\\\/bfnrt]){0,LENGTH}"/
KEY: /"[A-Za-z0-9_ .@$#-]{1,LENGTH}"/
NUMBER: /-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,6})?/
"""


@dataclass(frozen=True)
class ObjectShape:
    depth: int  # containers nested in the outer object, itself included
    members: int  # members of each object, elements of each array
    length: int  # characters of each key and string

    def worst_case_bytes(self) -> int:
        scalar = max(2 + BYTES_PER_CHAR * self.length, NUMBER_BYTES, 5)
        key = 2 + self.length
        value = scalar
        for _ in range(self.depth):
            container = 2 + self.members * (key + 1 + value) + self.members - 1
            value = max(container, scalar)
        return value

    def lark(self) -> str:
        rules = [f"start: obj{self.depth}", "value0: scalar"]
        more = f"{{0,{self.members - 1}}}" if self.members > 1 else ""
        for d in range(1, self.depth + 1):
            member, element = f'KEY ":" value{d - 1}', f"value{d - 1}"
            if more:
                member, element = f'{member} ("," {member}){more}', f'{element} ("," {element}){more}'
            rules += [
                f'obj{d}: "{{" ({member})? "}}"',
                f'arr{d}: "[" ({element})? "]"',
                f"value{d}: obj{d} | arr{d} | scalar",
            ]
        return "\n".join(rules) + _SCALARS.replace("LENGTH", str(self.length))


def json_object_grammar(budget_bytes: int) -> tuple[str, int]:
    """(Lark grammar text, bytes of its longest value) for the loosest shape within `budget_bytes`:
    the first of SHAPES whose strings reach PREFERRED_LENGTH, else the first whose strings reach
    SHORT_LENGTH (more members rather than longer strings), else the one with the longest strings."""
    shapes = [s for s in (_longest(depth, members, budget_bytes) for depth, members in SHAPES) if s]
    if not shapes:
        smallest = ObjectShape(1, 1, 1).worst_case_bytes()
        raise InvalidSchemaError(
            f"a JSON object needs a budget of at least {smallest + 1} tokens here, more than the "
            f"{budget_bytes + 1} given; raise max_tokens"
        )
    for wanted in (PREFERRED_LENGTH, SHORT_LENGTH):
        for shape in shapes:
            if shape.length >= wanted and shape.members > 1:  # one member only as the last resort
                return shape.lark(), shape.worst_case_bytes()
    best = max(shapes, key=lambda s: s.length)
    return best.lark(), best.worst_case_bytes()


def _longest(depth: int, members: int, budget_bytes: int) -> ObjectShape | None:
    if ObjectShape(depth, members, 1).worst_case_bytes() > budget_bytes:
        return None
    low, high = 1, MAX_LENGTH
    while low < high:
        mid = (low + high + 1) // 2
        if ObjectShape(depth, members, mid).worst_case_bytes() <= budget_bytes:
            low = mid
        else:
            high = mid - 1
    return ObjectShape(depth, members, low)
