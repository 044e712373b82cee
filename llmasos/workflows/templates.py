"""Data between steps: jinja2 templates in its `SandboxedEnvironment`, checked before they ever run.

At submission every template is parsed and walked: it may read only `inputs`, `steps`, `item` and
`index` (and the names its own loops and `set`s bind), may not touch an attribute or key starting
with `_` (the way out of a sandbox: `''.__class__.__mro__`), and may not include, import or extend
other templates. What it reads from `steps` and `inputs` is returned as references, which
`validation.py` checks against the steps' schemas. At run time the sandbox refuses the same again.

A string that is exactly one `{{ expression }}` renders to the expression's value, so a list or
a number passes between steps as itself; any other string renders to text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from llmasos.errors import WorkflowValidationError

ROOTS = ("inputs", "steps", "item", "index")
#: Names jinja2 itself binds inside a template (`loop.index` in a for).
_BUILTIN_NAMES = ("loop",)
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
_FORBIDDEN_NODES = (
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.Extends,
    nodes.Macro,
    nodes.CallBlock,
)


@dataclass(frozen=True)
class Reference:
    """A read of `inputs.<name>...` or `steps.<id>.<output|error|status>...` by a template."""

    root: str  # "inputs" or "steps"
    parts: tuple[str | int, ...]  # the names and indexes read after the root

    def __str__(self) -> str:
        return ".".join([self.root, *map(str, self.parts)])


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def single_expression(text: str) -> str | None:
    """The expression of a string that is exactly one `{{ ... }}`, else None."""
    match = _SINGLE_EXPRESSION.match(text)
    if match is None or "{{" in match["expr"] or "}}" in match["expr"]:
        return None
    return match["expr"].strip()


def check(text: str, path: str, *, expression: bool = False) -> list[Reference]:
    """The references of a template (or a bare expression); WorkflowValidationError at `path` if it
    does not parse or tries to reach outside the sandbox."""
    source = "{{ " + text + " }}" if expression else text
    try:
        tree = _ENV.parse(source)
    except TemplateError as err:
        raise WorkflowValidationError(f"the template does not parse: {err}", path) from None
    bound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for node in tree.find_all(_FORBIDDEN_NODES):
        raise WorkflowValidationError(
            f"templates may not use {type(node).__name__.lower()}; compute the value in a step instead", path
        )
    references = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        _refuse_escape(node, path)
        free = isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in bound
        if free and node.name not in (*ROOTS, *_BUILTIN_NAMES):
            raise WorkflowValidationError(
                f"the template reads {node.name!r}; it may read only {', '.join(ROOTS)}", path
            )
    for chain in _outermost_chains(tree):
        reference = _reference(chain)
        if reference is not None:
            references.append(reference)
    return references


def _refuse_escape(node: nodes.Node, path: str) -> None:
    key = None
    if isinstance(node, nodes.Getattr):
        key = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        key = node.arg.value
    elif isinstance(node, nodes.Name):
        key = node.name
    if isinstance(key, str) and key.startswith("_"):
        raise WorkflowValidationError(
            f"the template reaches for {key!r}, outside its sandbox: templates read data, never "
            "Python internals",
            path,
        )


def _outermost_chains(tree: nodes.Node) -> list[nodes.Node]:
    """Each Getattr/Getitem/Name chain once, by its outermost node (`steps.a.output.x`, not its parts)."""
    inner: set[int] = set()
    chains = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        inner.add(id(node.node))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) not in inner:
            chains.append(node)
    return chains


def _reference(node: nodes.Node) -> Reference | None:
    parts: list[str | int] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            parts.append(node.arg.value)
        else:  # a computed key: what follows cannot be known before the run
            parts.clear()
        node = node.node
    if isinstance(node, nodes.Name) and node.name in ("inputs", "steps") and node.ctx == "load":
        return Reference(node.name, tuple(reversed(parts)))
    return None


def render(value: Any, context: dict) -> Any:
    """`value` with every template in it rendered over `context` (dicts and lists walked)."""
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not is_template(value):
        return value
    try:
        expression = single_expression(value)
        if expression is not None:
            return evaluate(expression, context)
        return _ENV.from_string(value).render(context)
    except SecurityError as err:
        raise WorkflowValidationError(f"the template was stopped by the sandbox: {err}") from None


def evaluate(expression: str, context: dict) -> Any:
    """The value of one expression (`steps.a.output.n > 3`), sandboxed; undefined names raise."""
    result = _ENV.compile_expression(expression, undefined_to_none=False)(**context)
    if isinstance(result, StrictUndefined):
        str(result)  # raises UndefinedError naming what is missing
    return result


def references_in(value: Any, path: str) -> list[tuple[str, str, list[Reference]]]:
    """(path, text, references) of every template inside `value`, each checked for sandbox escapes."""
    found: list[tuple[str, str, list[Reference]]] = []
    if isinstance(value, dict):
        for key, sub in value.items():
            found += references_in(sub, f"{path}.{key}")
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found += references_in(sub, f"{path}[{index}]")
    elif is_template(value):
        found.append((path, value, check(value, path)))
    return found


def reads_name(text: str, name: str, *, expression: bool = False) -> bool:
    """Whether a (checked) template reads the free name `name` (`item` outside a for_each)."""
    tree = _ENV.parse("{{ " + text + " }}" if expression else text)
    bound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return name not in bound and any(n.name == name and n.ctx == "load" for n in tree.find_all(nodes.Name))


def whole_reference(expression: str) -> bool:
    """Whether an expression is only a read (`steps.a.output.x`), no filter or operator around it."""
    tree = _ENV.parse("{{ " + expression + " }}")
    output = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1:
        return False
    node = output.nodes[0]
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        node = node.node
    return isinstance(node, nodes.Name)
