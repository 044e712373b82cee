"""Where a tool's model runs: in this process, or on a cluster node that has the tool's capability.

On one box every tool runs here. A server started with `--cluster` hands its node placer to
`use_nodes` (`llmasos.cluster.tools.ToolPlacer`), and from then on the tools that nodes host (OCR,
transcription, speech and embeddings: `llmasos.tools.nodes.NODE_TOOLS`) run on a node with the
capability, a call whose node dies in flight being retried once on another; with no such node the
call fails with a 503 that names the capability. The tool itself still checks its arguments, reads
its input and shapes its result here: only the model's work crosses to the node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class NodeRunner(Protocol):
    """Runs a node tool on a node of the cluster: (the node's name, the tool function's result)."""

    def run(self, tool: str, payload: Any) -> tuple[str, Any]: ...


_nodes: NodeRunner | None = None
_lock = threading.Lock()


def use_nodes(runner: NodeRunner | None) -> NodeRunner | None:
    """Run node tools through `runner` from now on (None: here again); returns the previous one."""
    global _nodes
    with _lock:
        previous, _nodes = _nodes, runner
    return previous


def run_tool(tool: str, payload: Any, local: Callable[[Any], T]) -> T:
    """`local(payload)`, on a node of the cluster when one is in use (`tool` names it there), else here."""
    runner = _nodes
    if runner is None:
        return local(payload)
    _, result = runner.run(tool, payload)
    return result
