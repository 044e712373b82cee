"""One model over every node that holds it: an engine, as the kernel sees engines.

`ClusterEngine` implements the engine protocol (`llmasos.engine.protocol.Engine`) by placing each new
request on one node's engine actor (`placement.choose_node`) and stepping every node that holds
requests at once: one Ray call per node per kernel step, in which the node runs `steps_per_call`
engine steps and answers with its whole batch's outputs of them, merged per request. It also tells
the kernel where each request runs (`node_of`, the placement interface).

Failure: when a node's actor dies, every request it held moves to another node that holds the model
and continues from the tokens the head had already received (`EngineHost.adopt` re-prefills them),
so a stream neither repeats nor loses a character. With no node left, those requests fail with a 503
that names what is missing. A step that fails on one node for another reason is stepped apart there,
so only the request that fails ends (the protocol's fault isolation, done per node).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmasos.cluster.calls import NodeLostError, call
from llmasos.cluster.placement import NodeLoad, PrefixIndex, choose_node, round_robin
from llmasos.cluster.remote_engine import EngineFacts
from llmasos.engine.protocol import EngineStats, RequestOutput, StepOutput
from llmasos.engine.sampling import SamplingParams
from llmasos.engine.sequence import SuspendMode
from llmasos.errors import ClusterUnavailableError, RequestNotFoundError

logger = logging.getLogger(__name__)

#: Seconds between looks at the registry for nodes that joined or died.
REFRESH_SECONDS = 2.0
#: Engine steps a node runs per call of the head (`EngineHost.step`). A remote step of 8 SmolLM2 streams
#: on one thread was 11% slower than in-process (~3 of ~28 ms, idle box); a no-op call to an engine
#: actor took 1.0 ms (median, load 14) and a step's output pickles to ~760 bytes, so the cost is the
#: call's, paid half as often with two steps per call, for tokens that reach the stream in pairs and a
#: cancel that waits one more step.
STEPS_PER_CALL = 2


class EngineDirectory(Protocol):
    """Where a cluster engine finds the nodes holding its model (the registry)."""

    def engines(self, model: str) -> list[tuple[str, Any]]: ...

    def mark_dead(self, node: str, reason: str) -> None: ...


@dataclass
class NodeEngine:
    name: str
    handle: Any  # the engine actor
    facts: EngineFacts


@dataclass
class HeldRequest:
    """What the head keeps of a request so another node can take it over."""

    prompt_ids: list[int]
    params: SamplingParams | None
    namespace: str
    node: str
    output_ids: list[int] = field(default_factory=list)
    suspended: bool = False


class ClusterEngine:
    """An engine for `model` over the cluster's nodes (see the module docstring)."""

    def __init__(
        self,
        model: str,
        directory: EngineDirectory,
        *,
        placement: str = "affinity",
        steps_per_call: int = STEPS_PER_CALL,
    ) -> None:
        self.model = model
        self.placement = placement  # "affinity" or "round_robin" (the benchmark's baseline)
        self.steps_per_call = steps_per_call
        self._directory = directory
        self._nodes: dict[str, NodeEngine] = {}
        self._held: dict[str, HeldRequest] = {}
        # Requests no node can take: id -> (why, whether it was suspended when its node died).
        self._orphans: dict[str, tuple[str, bool]] = {}
        self._refreshed_at = 0.0
        self._placed = 0
        self.num_failovers = 0  # requests moved off a dead node
        self._refresh()
        if not self._nodes:
            raise ClusterUnavailableError(self._missing())
        first = next(iter(self._nodes.values()))
        self._tokenizer = call(first.handle.tokenizer.remote())
        self._prefixes = PrefixIndex(first.facts.block_size)

    # ---- the engine protocol's properties ------------------------------------------------------

    @property
    def tokenizer(self):  # -> Tokenizer
        return self._tokenizer

    @property
    def context_length(self) -> int:
        return min(n.facts.context_length for n in self._live_nodes())

    @property
    def max_sequence_tokens(self) -> int:
        return min(n.facts.max_sequence_tokens for n in self._live_nodes())

    @property
    def max_num_seqs(self) -> int:
        if not self._nodes:
            self._refresh(force=False)  # a node may have come back
        return max(1, sum(n.facts.max_num_seqs for n in self._nodes.values()))

    def _live_nodes(self) -> list[NodeEngine]:
        """The nodes holding the model, looking again if none is left (ClusterUnavailableError if so)."""
        if not self._nodes:
            self._refresh(force=False)
        if not self._nodes:
            raise ClusterUnavailableError(self._missing())
        return list(self._nodes.values())

    @property
    def memory_bytes(self) -> int:
        return 0  # the weights and KV live on the nodes; the head's memory budget holds none of them

    # ---- placement -----------------------------------------------------------------------------

    def node_of(self, request_id: str) -> str | None:
        """The node running `request_id` now (the kernel's `node` column)."""
        held = self._held.get(request_id)
        return held.node if held else None

    def node_names(self) -> list[str]:
        return sorted(self._nodes)

    def queued_on(self, node: str) -> int:
        return sum(1 for h in self._held.values() if h.node == node)

    def _missing(self) -> str:
        return (
            f"no live node of the cluster has the 'llm' capability with model {self.model!r} loaded; "
            f"join one with `llmasos node start --address HEAD --capabilities llm --models {self.model}`"
        )

    def _refresh(self, force: bool = True) -> None:
        """Take in nodes that joined; move the requests of nodes the registry says are gone."""
        now = time.monotonic()
        if not force and now - self._refreshed_at < REFRESH_SECONDS:
            return
        self._refreshed_at = now
        listed = dict(self._directory.engines(self.model))
        for name, handle in listed.items():
            if name in self._nodes and self._nodes[name].handle == handle:
                continue
            try:
                self._nodes[name] = NodeEngine(name, handle, call(handle.facts.remote(), timeout=60))
            except Exception as err:
                logger.warning("node %s holds %s but does not answer: %s", name, self.model, err)
        for name in [n for n in self._nodes if n not in listed]:
            self._fail_over(name, "the registry lists it as gone")

    def _place(self, token_ids: list[int], namespace: str, exclude: Collection[str] = ()) -> str | None:
        names = [n for n in self._nodes if n not in exclude]
        if not names:
            return None
        hashes = self._prefixes.block_hashes(namespace, token_ids)
        loads = [
            NodeLoad(
                n,
                self.queued_on(n),
                self._nodes[n].facts.max_num_seqs,
                self._prefixes.cached_blocks(n, hashes),
            )
            for n in names
        ]
        self._placed += 1
        node = round_robin(loads, self._placed) if self.placement == "round_robin" else choose_node(loads)
        self._prefixes.record(node, hashes)
        return node

    # ---- the engine protocol's calls -----------------------------------------------------------

    def add(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        cache_namespace: str = "default",
    ) -> None:
        self._refresh(force=False)
        token_ids = self._tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        tried: set[str] = set()
        while (node := self._place(token_ids, cache_namespace, exclude=tried)) is not None:
            try:
                call(self._nodes[node].handle.add.remote(request_id, token_ids, params, cache_namespace))
            except NodeLostError as err:
                self._fail_over(node, str(err))
                tried.add(node)
                continue
            self._held[request_id] = HeldRequest(token_ids, params, cache_namespace, node)
            return
        raise ClusterUnavailableError(self._missing())

    def step(self, request_ids: Collection[str] | None = None) -> StepOutput:
        self._refresh(force=False)
        if request_ids is None:
            wanted = set(self._held)
            orphaned = [rid for rid, (_, suspended) in self._orphans.items() if not suspended]
        else:
            wanted = set(request_ids)
            orphaned = [rid for rid in wanted if rid in self._orphans]
        if orphaned:  # raised before any node steps, so this step commits nothing
            raise ClusterUnavailableError(self._orphans[orphaned[0]][0])
        refs = {}
        for node in self._nodes:
            ids = [
                rid for rid, h in self._held.items() if h.node == node and not h.suspended and rid in wanted
            ]
            if ids:  # several steps per call, except when the kernel steps a chosen few (isolating a fault)
                chosen, steps = (None, self.steps_per_call) if request_ids is None else (ids, 1)
                refs[node] = (ids, self._nodes[node].handle.step.remote(chosen, steps))
        outputs: list[RequestOutput] = []
        computed: dict[str, int] = {}
        work: dict[str, float] = {}
        for node, (ids, ref) in refs.items():
            try:
                step = call(ref)
            except NodeLostError as err:
                self._fail_over(node, str(err))
                continue
            except Exception as err:
                logger.exception("a step on node %s failed; stepping its requests apart", node)
                step = self._step_apart(node, ids, err)
            outputs += step.outputs
            computed.update(step.num_computed_tokens)
            work.update(step.computed_work)
        self._record(outputs)
        return StepOutput(tuple(outputs), computed, work)

    def _record(self, outputs: list[RequestOutput]) -> None:
        for output in outputs:
            held = self._held.get(output.request_id)
            if held is None:
                continue
            held.output_ids += output.token_ids
            if output.finished:
                del self._held[output.request_id]

    def _step_apart(self, node: str, ids: list[str], first_error: Exception) -> StepOutput:
        """Step `ids` on `node` in halves until each request stepped or failed alone (then it ends
        with an error output), as the kernel's fault isolation does on one engine."""
        outputs: list[RequestOutput] = []
        computed: dict[str, int] = {}
        work: dict[str, float] = {}
        groups = [ids]
        while groups:
            group = groups.pop()
            try:
                step = call(self._nodes[node].handle.step.remote(group))
            except NodeLostError:
                raise
            except Exception as err:
                if len(group) > 1:
                    groups += [group[len(group) // 2 :], group[: len(group) // 2]]
                    continue
                outputs.append(self._error_output(node, group[0], err))
                continue
            outputs += step.outputs
            computed.update(step.num_computed_tokens)
            work.update(step.computed_work)
        return StepOutput(tuple(outputs), computed, work)

    def _error_output(self, node: str, request_id: str, err: Exception) -> RequestOutput:
        held = self._held[request_id]
        try:
            call(self._nodes[node].handle.abort.remote(request_id))
        except Exception:
            logger.warning("aborting %s on node %s failed", request_id, node)
        return RequestOutput(
            request_id,
            [],
            "",
            True,
            "error",
            len(held.prompt_ids),
            len(held.output_ids),
            error=f"on node {node}: {type(err).__name__}: {err}",
        )

    def abort(self, request_id: str) -> None:
        if self._orphans.pop(request_id, None) is not None:
            return
        held = self._held.pop(request_id, None)
        if held is None:
            raise RequestNotFoundError(f"request {request_id!r} is not held by the cluster")
        try:
            call(self._nodes[held.node].handle.abort.remote(request_id))
        except (NodeLostError, KeyError):
            pass  # the node is gone, and the request with it
        except RequestNotFoundError:
            pass

    def suspend(self, request_id: str, mode: SuspendMode | str = SuspendMode.SWAP):  # -> SuspendReport
        report = self._on_node(request_id, "suspend", mode)
        self._held[request_id].suspended = True
        return report

    def resume(self, request_id: str):  # -> SuspendReport
        report = self._on_node(request_id, "resume")
        self._held[request_id].suspended = False
        return report

    def suspend_costs(self, request_id: str) -> dict:
        return self._on_node(request_id, "suspend_costs")

    def _on_node(self, request_id: str, method: str, *args: Any) -> Any:
        """Call `method` on the node holding `request_id`; if that node died, on the one it moved to."""
        for _ in range(len(self._nodes) + 1):
            held = self._held.get(request_id)
            if held is None:
                raise ClusterUnavailableError(self._missing())
            try:
                return call(getattr(self._nodes[held.node].handle, method).remote(request_id, *args))
            except NodeLostError as err:
                self._fail_over(held.node, str(err))
        raise ClusterUnavailableError(self._missing())

    def stats(self) -> EngineStats:
        # list(): /metrics reads this from another thread while the kernel's may drop a dead node
        refs = {name: node.handle.stats.remote() for name, node in list(self._nodes.items())}
        stats = []
        for ref in refs.values():
            try:
                stats.append(call(ref, timeout=30))
            except Exception:  # a dying node: the next step moves its work
                continue
        return _sum_stats(stats)

    # ---- failover ------------------------------------------------------------------------------

    def _fail_over(self, node: str, reason: str) -> None:
        """`node` is gone: move each request it held to another node, or orphan it if none is left."""
        if self._nodes.pop(node, None) is None:
            return
        logger.warning("node %s is lost (%s); moving its requests", node, reason)
        self._prefixes.forget(node)
        try:
            self._directory.mark_dead(node, reason)
        except Exception:
            logger.exception("telling the registry node %s died failed", node)
        for request_id, held in list(self._held.items()):
            if held.node == node:
                self._move(request_id, held)

    def _move(self, request_id: str, held: HeldRequest) -> None:
        tried: set[str] = set()
        context = held.prompt_ids + held.output_ids
        while (target := self._place(context, held.namespace, exclude=tried)) is not None:
            handle = self._nodes[target].handle
            try:
                call(
                    handle.adopt.remote(
                        request_id, held.prompt_ids, held.output_ids, held.params, held.namespace
                    )
                )
                if held.suspended:
                    call(handle.suspend.remote(request_id, SuspendMode.RECOMPUTE))
            except NodeLostError as err:
                tried.add(target)
                self._fail_over(target, str(err))
                continue
            held.node = target
            self.num_failovers += 1
            return
        del self._held[request_id]
        self._orphans[request_id] = (self._missing(), held.suspended)


def _sum_stats(stats: list[EngineStats]) -> EngineStats:
    if not stats:
        return EngineStats(0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0.0)
    total = {
        name: sum(getattr(s, name) for s in stats)
        for name in (
            "num_running", "num_waiting", "num_suspended", "num_blocks", "num_free_blocks",
            "num_cached_blocks", "kv_cache_bytes", "prefix_cache_queries", "prefix_cache_hits",
        )
    }  # fmt: skip
    rate = sum(s.prefill_tokens_per_second for s in stats) / len(stats)
    return EngineStats(block_size=stats[0].block_size, prefill_tokens_per_second=rate, **total)
