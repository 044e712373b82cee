"""Starting and joining a cluster: the Ray head, the registry on it, and nodes that join with the secret.

`serve --cluster` starts a Ray head on loopback (or connects to `--address`), creates the registry
actor there, and boots the kernel with `ClusterEngine`s as its engines. `node start` starts a Ray node
that joins the head, then `join_node` proves the secret, loads each advertised model in an engine
actor pinned to that node, and starts tool actors for its capabilities. Engines and tools are owned
by the process that joined them: when it (or its node) dies, they die, and the head moves their work.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from llmasos.cluster.calls import call
from llmasos.cluster.cluster_engine import ClusterEngine
from llmasos.cluster.registry import DEFAULT_CAPABILITIES, NAMESPACE, REGISTRY_NAME, NodeRegistry, NodeView
from llmasos.cluster.remote_engine import EngineHost
from llmasos.cluster.secret import join_proof
from llmasos.cluster.tools import ToolHost, ToolTable
from llmasos.errors import ClusterUnavailableError

logger = logging.getLogger(__name__)

#: Seconds an engine actor may take to load its model before the node is marked unhealthy.
LOAD_TIMEOUT_SECONDS = 300.0


def connect(address: str) -> None:
    """Connect this process to the cluster at `address` as a Ray driver."""
    if ray.is_initialized():
        return
    ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)


class Directory:
    """The registry actor as the head's code uses it (`EngineDirectory`, plus what interfaces show)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def engines(self, model: str) -> list[tuple[str, Any]]:
        return call(self.handle.engines.remote(model))

    def tools(self, capability: str) -> list[tuple[str, Any]]:
        return call(self.handle.tools.remote(capability))

    def mark_dead(self, node: str, reason: str) -> None:
        call(self.handle.mark_dead.remote(node, reason))

    def nodes(self) -> list[NodeView]:
        return call(self.handle.nodes.remote())


def start_registry(secret: str) -> Directory:
    """The registry actor, pinned to this driver's node (the head), made if it does not exist."""
    here = ray.get_runtime_context().get_node_id()
    handle = (
        ray.remote(NodeRegistry)
        .options(
            name=REGISTRY_NAME,
            namespace=NAMESPACE,
            num_cpus=0,
            max_concurrency=8,
            get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        )
        .remote(secret)
    )
    return Directory(handle)


def find_registry() -> Directory:
    """The head's registry, for a node that joins (ClusterUnavailableError if no head runs one)."""
    try:
        return Directory(ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE))
    except ValueError:
        raise ClusterUnavailableError(
            "the cluster at this address has no LLMasOS head; start it with `llmasos serve --cluster`"
        ) from None


@dataclass(frozen=True)
class NodeSpec:
    """What a node offers: its name, Ray node id, capabilities and models (name -> file on the node)."""

    name: str
    ray_node_id: str
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    model_paths: tuple[tuple[str, str | None], ...] = ()  # None: not in the node's library
    num_threads: int = 1
    kv_cache_bytes: int | None = None


def join_node(directory: Directory, spec: NodeSpec, secret: str, tools: ToolTable | None = None) -> list[Any]:
    """Join `spec`'s node: prove the secret (NodeRefusedError if wrong), load its models there, start
    its tools (`tools`: by capability, see `cluster.tools.ToolTable`). Returns the actors it made
    (the caller owns them: they live while it does)."""
    proof = join_proof(secret, spec.name)
    models = [name for name, _ in spec.model_paths]
    call(directory.handle.join.remote(spec.name, proof, spec.ray_node_id, list(spec.capabilities), models))
    pinned = NodeAffinitySchedulingStrategy(spec.ray_node_id, soft=False)
    actors = []
    if "llm" in spec.capabilities:
        for model, path in spec.model_paths:
            actor = _load_engine(directory, spec, proof, pinned, model, path)
            if actor is not None:
                actors.append(actor)
    actors += _start_tools(directory, spec, proof, pinned, tools or {})
    return actors


def _load_engine(directory: Directory, spec: NodeSpec, proof: str, pinned: Any, model: str, path: str | None):
    if path is None:
        reason = f"model {model!r} is not in this node's library; `llmasos models pull` it there"
        call(directory.handle.set_engine.remote(spec.name, proof, model, None, reason))
        return None
    actor = (
        ray.remote(EngineHost)
        .options(num_cpus=0, scheduling_strategy=pinned, max_restarts=0)
        .remote(path, spec.num_threads, spec.kv_cache_bytes)
    )
    try:
        call(actor.facts.remote(), timeout=LOAD_TIMEOUT_SECONDS)
    except Exception as err:
        reason = f"model {model!r} could not be loaded: {load_error(err)}"
        logger.warning("node %s: %s", spec.name, reason)
        ray.kill(actor)
        call(directory.handle.set_engine.remote(spec.name, proof, model, None, reason))
        return None
    call(directory.handle.set_engine.remote(spec.name, proof, model, actor))
    return actor


def load_error(err: BaseException) -> str:
    """The line of an actor's creation failure that says what went wrong (not Ray's preamble)."""
    text = str(err.__cause__ or err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line or "Exception:" in line]
    return (named[-1] if named else lines[-1] if lines else type(err).__name__)[:500]


def _start_tools(
    directory: Directory, spec: NodeSpec, proof: str, pinned: Any, tools: ToolTable
) -> list[Any]:
    actors = []
    for capability in spec.capabilities:
        if capability not in tools:
            continue
        actor = (
            ray.remote(ToolHost)
            .options(num_cpus=0, scheduling_strategy=pinned)
            .remote(spec.name, capability, tools[capability])
        )
        call(directory.handle.set_tool.remote(spec.name, proof, capability, actor))
        actors.append(actor)
    return actors


def cluster_loader(directory: Directory, placement: str = "affinity"):
    """(load, estimate) for the residency manager: a model is a ClusterEngine over its nodes, and the
    head's memory holds none of it."""

    def load(name: str) -> tuple[ClusterEngine, int]:
        return ClusterEngine(name, directory, placement=placement), 0

    def estimate(name: str) -> int:
        return 0

    return load, estimate


def model_paths(
    models: Iterable[str], library_root: Path | None = None
) -> tuple[tuple[str, str | None], ...]:
    """Each model name with its file in this machine's library (None where it is not there)."""
    from llmasos.errors import LLMasOSError
    from llmasos.library.store import ModelStore

    store = ModelStore(library_root)
    paths = []
    for name in models:
        try:
            paths.append((name, str(store.model_path(name))))
        except LLMasOSError:
            paths.append((name, None))
    return tuple(paths)


def ray_command() -> str:
    """The `ray` command of this interpreter's environment."""
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class Head:
    """A Ray head this server started (or joined), and the registry on it."""

    address: str
    directory: Directory
    process: subprocess.Popen | None = None  # `ray start --head --block`, when we started it

    def stop(self) -> None:
        ray.shutdown()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # --block: the head's processes stop with it
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_head(secret: str, address: str | None = None, host: str = "127.0.0.1", port: int = 6380) -> Head:
    """Start a Ray head bound to `host` (or join the one at `address`), connect, start the registry."""
    process = None
    if address is None:
        address = f"{host}:{port}"
        command = [ray_command(), "start", "--head", "--block", f"--port={port}", f"--node-ip-address={host}"]
        command += ["--num-cpus=0", "--include-dashboard=false", "--disable-usage-stats"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for_gcs(address, process)
    connect(address)
    return Head(address, start_registry(secret), process)


def _wait_for_gcs(address: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
            raise ClusterUnavailableError(f"the Ray head did not start: {error.strip() or 'no output'}")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise ClusterUnavailableError(f"the Ray head did not listen on {address} within {timeout:.0f} s")


#: Object store of a node: steps carry a batch's new tokens, tens of kilobytes at most.
NODE_OBJECT_STORE_BYTES = 256 * 2**20
#: Seconds between a node's checks that its head still runs (a lost head: the node starts again).
HEAD_CHECK_SECONDS = 2.0


def run_node(
    address: str,
    name: str,
    capabilities: tuple[str, ...],
    models: tuple[str, ...],
    secret: str,
    *,
    threads: int = 1,
    host: str = "127.0.0.1",
    tools: ToolTable | None = None,
    on_joined: Any = None,  # called with this node's NodeView once it has joined
) -> None:
    """A Ray node on this machine joined to the head at `address`, serving `models` and
    `capabilities` until interrupted (its engines and tools stop with it); ClusterUnavailableError
    when it loses the head (`supervise.keep_node_joined` then joins a new one)."""
    node = start_ray_node(address, host, threads)
    stop = threading.Event()
    head_lost = False
    try:
        connect(address)
        for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own
            signal.signal(signum, lambda *_: stop.set())
        directory = find_registry()
        spec = NodeSpec(name, node.node_id, capabilities, model_paths(models), threads)
        actors = join_node(directory, spec, secret, tools)  # noqa: F841  # they live while we hold them
        if on_joined is not None:
            on_joined(next(n for n in directory.nodes() if n.name == name))
        while not stop.wait(HEAD_CHECK_SECONDS):
            if not node.live_processes():
                raise ClusterUnavailableError("this node's Ray processes ended; start it again")
            try:
                call(directory.handle.ping.remote(), timeout=10)
            except Exception as err:
                head_lost = True
                raise ClusterUnavailableError(f"lost the head at {address} ({type(err).__name__})") from err
    finally:
        if not head_lost:  # with the head gone, Ray's shutdown may wait on it: only stop our processes
            ray.shutdown()
        node.kill_all_processes(check_alive=False, allow_graceful=True)


def start_ray_node(address: str, host: str, threads: int) -> Any:  # -> ray._private.node.Node
    """This machine's Ray processes (raylet, object store) joined to the head at `address`, bound to
    `host`, as `ray start --address` would start them: in this process, because `ray start` rewrites
    a loopback head address to the machine's routable one (see `loopback`)."""
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    params = RayParams(
        node_ip_address=host,
        gcs_address=address,
        num_cpus=threads,
        object_store_memory=NODE_OBJECT_STORE_BYTES,
        include_log_monitor=False,
        node_manager_port=0,
        min_worker_port=0,
        max_worker_port=0,
    )
    params.dashboard_agent_listen_port = None
    try:
        return Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    except Exception as err:
        raise ClusterUnavailableError(f"this node could not join the cluster at {address}: {err}") from err
