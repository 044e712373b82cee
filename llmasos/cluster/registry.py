"""The head's table of nodes: who joined, what each can do, which models it holds, and its health.

It runs as one named Ray actor on the head (`REGISTRY_NAME`), so nodes reach it to join and the
server reads it to place work. A node joins with a proof of the cluster secret (`secret.join_proof`)
or is refused; each of its models is then loaded there and recorded healthy with its engine, or
unhealthy with the reason it could not load. A node whose Ray node has died is shown dead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from llmasos.cluster.secret import is_valid_proof
from llmasos.errors import ModelNotFoundError, NodeRefusedError

REGISTRY_NAME = "llmasos-registry"
NAMESPACE = "llmasos"

#: What a node with no --capabilities can do.
DEFAULT_CAPABILITIES = ("llm",)


@dataclass
class ModelHealth:
    healthy: bool
    reason: str = ""  # why it is not (the load error), or "loading"


@dataclass
class NodeRecord:
    """One joined node, as the head knows it."""

    name: str
    ray_node_id: str
    capabilities: tuple[str, ...]
    models: dict[str, ModelHealth] = field(default_factory=dict)
    engines: dict[str, Any] = field(default_factory=dict)  # model -> engine actor handle
    tools: dict[str, Any] = field(default_factory=dict)  # capability -> tool actor handle
    joined_at: float = 0.0
    alive: bool = True
    reason: str = ""  # why it is not alive


@dataclass(frozen=True)
class NodeView:
    """What `llmasos nodes` and `/os/nodes` show of a node (no handles)."""

    name: str
    ray_node_id: str
    capabilities: tuple[str, ...]
    models: dict[str, dict]  # model -> {"healthy": bool, "reason": str}
    alive: bool
    healthy: bool  # alive, and every model it advertised loaded
    reason: str
    joined_at: float

    def as_dict(self) -> dict:
        return asdict(self)


class NodeRegistry:
    """The body of the registry actor (`ray.remote(NodeRegistry)`); every method is thread-safe."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._nodes: dict[str, NodeRecord] = {}
        self._lock = threading.Lock()

    def join(
        self, name: str, proof: str, ray_node_id: str, capabilities: list[str], models: list[str]
    ) -> None:
        """Record a node, or raise NodeRefusedError if its proof of the secret is wrong."""
        if not is_valid_proof(self._secret, name, proof):
            raise NodeRefusedError(
                f"node {name!r} did not prove it knows the cluster secret; copy the head's "
                "$LLMASOS_HOME/cluster_secret to the node (or pass --secret-file) and join again"
            )
        with self._lock:
            self._nodes[name] = NodeRecord(
                name,
                ray_node_id,
                tuple(capabilities or DEFAULT_CAPABILITIES),
                {m: ModelHealth(False, "loading") for m in models},
                joined_at=time.time(),
            )

    def set_engine(self, name: str, proof: str, model: str, engine: Any, reason: str = "") -> None:
        """The outcome of loading `model` on node `name`: its engine actor, or None and why not."""
        self._check(name, proof)
        with self._lock:
            node = self._nodes[name]
            node.models[model] = ModelHealth(engine is not None, reason)
            if engine is not None:
                node.engines[model] = engine

    def set_tool(self, name: str, proof: str, capability: str, tool: Any) -> None:
        self._check(name, proof)
        with self._lock:
            self._nodes[name].tools[capability] = tool

    def ping(self) -> bool:
        """A node's check that the head it joined still runs."""
        return True

    def leave(self, name: str, proof: str) -> None:
        self._check(name, proof)
        with self._lock:
            self._nodes.pop(name, None)

    def mark_dead(self, name: str, reason: str) -> None:
        """The head saw the node's actors die: nothing is placed there until it joins again."""
        with self._lock:
            node = self._nodes.get(name)
            if node is not None:
                node.alive, node.reason = False, reason

    def engines(self, model: str) -> list[tuple[str, Any]]:
        """(node name, engine actor) of every live node where `model` loaded."""
        self._refresh_liveness()
        with self._lock:
            return [
                (n.name, n.engines[model])
                for n in self._nodes.values()
                if n.alive and model in n.engines and n.models[model].healthy
            ]

    def tools(self, capability: str) -> list[tuple[str, Any]]:
        """(node name, tool actor) of every live node with `capability`."""
        self._refresh_liveness()
        with self._lock:
            return [
                (n.name, n.tools[capability])
                for n in self._nodes.values()
                if n.alive and capability in n.tools
            ]

    def nodes(self) -> list[NodeView]:
        self._refresh_liveness()
        with self._lock:
            return [_view(n) for n in sorted(self._nodes.values(), key=lambda n: n.name)]

    def _check(self, name: str, proof: str) -> None:
        if name not in self._nodes or not is_valid_proof(self._secret, name, proof):
            raise NodeRefusedError(f"node {name!r} has not joined with the cluster secret; join it first")

    def _refresh_liveness(self) -> None:
        import ray

        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        with self._lock:
            for node in self._nodes.values():
                if node.alive and node.ray_node_id not in alive:
                    node.alive, node.reason = False, "its Ray node is gone"


def model_resolver(
    nodes: Callable[[], list[NodeView]], library: Callable[[str], str], alias: Callable[[str], str]
) -> Callable[[str], str]:
    """The head's model names: what its own library knows (`library`, aliases too), else a model that a
    live node advertises (after `alias`), so the head need not hold a model's file that its nodes run."""

    def resolve(name: str) -> str:
        try:
            return library(name)
        except ModelNotFoundError as err:
            wanted = alias(name).lower()
            if any(wanted in node.models for node in nodes() if node.alive):
                return wanted
            raise ModelNotFoundError(
                f"{err}; or join a node that serves it: `llmasos node start --models {wanted}`"
            ) from None

    return resolve


def _view(node: NodeRecord) -> NodeView:
    models = {m: {"healthy": h.healthy, "reason": h.reason} for m, h in node.models.items()}
    healthy = node.alive and all(h.healthy for h in node.models.values())
    reason = node.reason or "; ".join(f"{m}: {h.reason}" for m, h in node.models.items() if not h.healthy)
    return NodeView(
        node.name, node.ray_node_id, node.capabilities, models, node.alive, healthy, reason, node.joined_at
    )
