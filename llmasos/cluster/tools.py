"""Tools on nodes: OCR, transcription, speech and embeddings as Ray actors on nodes with the capability.

A node that joins with `vision`, `speech` or `embed` gets one `ToolHost` actor per capability; the
head sends each tool call to a node that has it (`ToolPlacer`, round robin among them), and a call
whose node dies in flight is retried once on another such node. A server with `--cluster` hands its
placer to the tools (`llmasos.tools.devices.use_nodes`), so `ocr`, `transcribe`, `speak` and `embed`
run on nodes however they are called (`llmasos ask` with an image, a tool call, a workflow step).
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from llmasos.errors import ClusterUnavailableError

logger = logging.getLogger(__name__)

#: A node's tools, by capability: tool name -> "module:function" that runs it (llmasos.tools.nodes
#: gives the built-in ones; this layer names no tool module itself, since tools sit above it).
ToolTable = dict[str, dict[str, str]]


def _resolve(path: str) -> Callable[[Any], Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class ToolHost:
    """The body of a tool actor: the tools of one capability, run on this node."""

    def __init__(self, node: str, capability: str, functions: dict[str, str]) -> None:
        self.node = node
        self.capability = capability
        self.functions = dict(functions)  # tool -> "module:function"
        self.num_calls = 0

    def run(self, tool: str, payload: Any) -> tuple[str, Any]:
        """(this node's name, the tool's result)."""
        if tool not in self.functions:
            raise ValueError(f"node {self.node} runs {self.capability} tools, not {tool!r}")
        self.num_calls += 1
        return self.node, _resolve(self.functions[tool])(payload)

    def pid(self) -> int:
        """This actor's process (tests kill it as a machine failure would)."""
        return os.getpid()


class ToolPlacer:
    """Sends tool calls to nodes with the tool's capability (round robin among them)."""

    def __init__(self, directory: Any, tools: ToolTable) -> None:  # a runtime.Directory
        self._directory = directory
        self._capability_of = {tool: cap for cap, functions in tools.items() for tool in functions}
        self._turns = itertools.count()
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()  # (tool, node) -> calls sent there, retries too

    def run(self, tool: str, payload: Any) -> tuple[str, Any]:
        """(the node that ran it, its result); retried once elsewhere if the node dies in flight."""
        from llmasos.cluster.calls import NodeLostError, call

        capability = self._capability_of.get(tool)
        if capability is None:
            raise ValueError(
                f"{tool!r} is not a tool the cluster places; use one of {sorted(self._capability_of)}"
            )
        tried: set[str] = set()
        for _ in range(2):
            hosts = [(n, h) for n, h in self._directory.tools(capability) if n not in tried]
            if not hosts:
                break
            name, host = hosts[next(self._turns) % len(hosts)]
            with self._lock:
                self.calls[tool, name] += 1
            try:
                return call(host.run.remote(tool, payload))
            except NodeLostError as err:
                logger.warning("node %s died running %s (%s); retrying elsewhere", name, tool, err)
                self._directory.mark_dead(name, str(err))
                tried.add(name)
        raise ClusterUnavailableError(
            f"no live node of the cluster has the {capability!r} capability that {tool} needs; join one "
            f"with `llmasos node start --address HEAD --capabilities {capability}`"
        )
