"""Where requests can go: every registered service and tool, each with its description and the
typical requests it declares (`examples`), as the program registry holds them.

The router compares a request with these texts by sentence embedding. Descriptions alone are
written for programmers ("Evaluate arithmetic: + - * / ..."); users phrase requests differently
("how much is ..."), so each program also carries example requests in users' words. The built-in
ones were written from what each program does, before the router's held-aside test set was run,
and must stay general: tuning them to that set would make its measured accuracy meaningless. A
plugin's programs become destinations the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmasos.programs import ProgramRegistry, default_registry


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str  # "service" or "tool"
    description: str
    examples: tuple[str, ...]
    input_schema: dict = field(default_factory=dict)  # what a step there takes

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.description, *self.examples)


def destinations(registry: ProgramRegistry | None = None) -> list[Destination]:
    """Every program of `registry` (default: the process-wide one), with its routing examples."""
    registry = registry or default_registry()
    return [
        Destination(p.name, p.kind, p.description, registry.examples_of(p), p.input_schema)
        for p in registry.list()
        if p.kind != "function"  # workflow functions are steps of workflows, not where requests go
    ]
