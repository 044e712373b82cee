"""A picture of a workflow's graph, each step coloured by its state in a run: Graphviz's `dot`.

The DOT source is written here; the picture is drawn by Graphviz from the system's packages
(`apt-get install graphviz`, as the Makefile's set-up does), never by a hand-made layout. Without
it, SVG and PNG are refused with a message saying what to install; DOT needs nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from llmasos.errors import InvalidRequestError, ToolUnavailableError
from llmasos.workflows.spec import Workflow

FORMATS = ("svg", "png", "dot")
#: Fill colours by step state (Graphviz X11 colour names).
COLOURS = {
    "succeeded": "palegreen",
    "failed": "salmon",
    "running": "lightskyblue",
    "waiting": "khaki",
    "skipped": "lightgrey",
    "pending": "white",
}
RENDER_TIMEOUT_SECONDS = 20


def dot_source(workflow: Workflow, steps: list[dict] | None = None) -> str:
    """The graph in DOT: one box per step (kind and name, state and attempts), one edge per need."""
    states = {s["step"]: s for s in steps or ()}
    lines = [
        f"digraph {json.dumps(workflow.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled"];',
    ]
    for step_id, step in workflow.steps.items():
        state = states.get(step_id, {})
        status = state.get("status", "pending")
        label = f"{step_id}\\n{step.kind}{': ' + step.name if step.name else ''}"
        if state:
            label += f"\\n{status}" + (
                f" ({state['attempts']} tries)" if state.get("attempts", 0) > 1 else ""
            )
        colour = COLOURS.get(status, "white")
        lines.append(f"  {json.dumps(step_id)} [label={json.dumps(label)}, fillcolor={colour}];")
        for need in step.needs:
            lines.append(f"  {json.dumps(need)} -> {json.dumps(step_id)};")
        if step.on_error not in ("fail", "continue"):
            lines.append(
                f'  {json.dumps(step_id)} -> {json.dumps(step.on_error)} [style=dashed, label="on error"];'
            )
    lines.append("}")
    return "\n".join(lines).replace("\\\\n", "\\n") + "\n"


def render_graph(workflow: Workflow, steps: list[dict] | None, fmt: str = "svg") -> bytes:
    """The picture as `fmt` (svg, png or dot)."""
    if fmt not in FORMATS:
        raise InvalidRequestError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    source = dot_source(workflow, steps)
    if fmt == "dot":
        return source.encode()
    dot = shutil.which("dot")
    if dot is None:
        raise ToolUnavailableError(
            "drawing a workflow needs Graphviz's `dot`: install it (apt-get install graphviz, "
            "brew install graphviz), or ask for format=dot"
        )
    done = subprocess.run(
        [dot, f"-T{fmt}"],
        input=source.encode(),
        capture_output=True,
        timeout=RENDER_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise ToolUnavailableError(f"Graphviz could not draw the workflow: {done.stderr.decode()[:300]}")
    return done.stdout
