"""One Ray cluster on loopback for the whole session: a head (no CPUs) and nodes of one CPU each, on
the tiny random model, joined through the same code `llmasos node start` runs.

Node `a` advertises the tiny model, a model file that cannot load and the `speech` capability; node
`b` the tiny model and `vision`. Both have `nap`, a tool that sleeps as long as it is told (a tool
call in flight when a node dies). Tests that remove a node add their own node first (see
`TinyCluster.add`), or run last in their module.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmasos.cluster.loopback import use_loopback

use_loopback(None)  # before Ray is imported: the test cluster listens on 127.0.0.1 only


MB = 2**20
SECRET = "test-cluster-secret"
NAP = {"nap": {"nap": "time:sleep"}}  # capability -> tool -> function, as llmasos.tools.nodes has


@dataclass
class TinyCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    directory: Any  # llmasos.cluster.runtime.Directory
    model_path: Path
    broken_path: Path
    ray_nodes: dict[str, Any] = field(default_factory=dict)
    actors: list = field(default_factory=list)

    def add(
        self,
        name: str,
        capabilities: tuple[str, ...] = ("llm",),
        models: dict | None = None,
        tools: dict | None = None,
    ) -> None:
        """Start a Ray node of one CPU and join it as `name` (`tools`: added to the built-in ones)."""
        from llmasos.cluster.runtime import NodeSpec, join_node
        from llmasos.tools.nodes import NODE_TOOLS

        node = self.cluster.add_node(num_cpus=1, object_store_memory=80 * MB)
        self.ray_nodes[name] = node
        models = {"tiny": str(self.model_path)} if models is None else models
        spec = NodeSpec(name, node.node_id, capabilities, tuple(models.items()), num_threads=1)
        self.actors += join_node(self.directory, spec, SECRET, {**NODE_TOOLS, **(tools or {})})

    def ensure_nodes(self) -> None:
        """Join nodes `a` and `b` as the session's cluster starts with them, each that is not there
        (a test removed it): a test that needs them holds whatever ran before it. Joining again
        under the same name replaces the dead node's record in the registry."""
        if "a" not in self.ray_nodes:
            models = {"tiny": str(self.model_path), "broken": str(self.broken_path)}
            self.add("a", ("llm", "speech", "nap"), models, NAP)
        if "b" not in self.ray_nodes:
            self.add("b", ("llm", "vision", "nap"), tools=NAP)

    def remove(self, name: str, pids: list[int] | None = None) -> None:
        """Kill node `name` as a machine failure would: its engine and tool processes (SIGKILL; `pids`
        if given, see `pids_on`), its raylet and everything else on it."""
        for pid in self.pids_on(name) if pids is None else pids:
            os.kill(pid, signal.SIGKILL)
        self.cluster.remove_node(self.ray_nodes.pop(name), allow_graceful=False)

    def pids_on(self, name: str) -> list[int]:
        """The processes of node `name`'s engine and tool actors."""
        from llmasos.cluster.calls import call

        engines = [handle for node, handle in self.directory.engines("tiny") if node == name]
        pids = [call(handle.facts.remote()).pid for handle in engines]
        view = next(n for n in self.directory.nodes() if n.name == name)
        for capability in view.capabilities:
            tools = [handle for node, handle in self.directory.tools(capability) if node == name]
            pids += [call(handle.pid.remote()) for handle in tools]
        return pids


@pytest.fixture(scope="session")
def tiny_cluster(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyCluster]:
    import ray
    from ray.cluster_utils import Cluster

    from llmasos.cluster.runtime import start_registry

    broken = tmp_path_factory.mktemp("broken") / "broken.gguf"
    broken.write_bytes(b"GGUF but not really a model file")
    head_args = {"num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 * MB}
    cluster = Cluster(initialize_head=True, connect=True, head_node_args=head_args)
    tiny = TinyCluster(cluster, start_registry(SECRET), tiny_gguf, broken)
    try:
        tiny.ensure_nodes()
        yield tiny
    finally:
        ray.shutdown()
        cluster.shutdown()
