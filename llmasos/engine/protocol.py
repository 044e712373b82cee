"""The engine protocol: everything the kernel, residency and system calls may ask of an engine, and the
frozen dataclasses that cross between them (in the style of vLLM v1's engine-core outputs).

One engine serves one model. The kernel decides who runs; the engine only runs what it holds:
- `add`, `abort`, `suspend`, `resume` change which requests it holds and where their KV lives; each
  is called when the kernel switches processes, never per token;
- `step` runs one forward pass over the requests it holds and returns a `StepOutput`: what came out
  (new tokens and text of the requests that sampled) *and* what each request computed (prompt chunks
  count), so the kernel charges processes from that one value;
- `suspend_costs`, `stats` and the properties are read between steps.

One call per step therefore suffices, and nothing crosses per token: an engine on another machine
(a Ray actor) implements this protocol by shipping the dataclasses below. Requests are named by the
caller's string ids. A step that raises has committed nothing, so the caller may retry it, and
`step(request_ids)` runs a subset, which lets the kernel find the one request that makes a step fail.
The implementations are `llmasos.engine.engine.LLMEngine` and the tests' `FakeEngine`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from llmasos.engine.sampling_params import SamplingParams, TokenLogprobs
from llmasos.engine.sequence import SuspendMode
from llmasos.engine.suspend import SuspendCost, SuspendReport
from llmasos.model.tokenizer import Tokenizer


@dataclass(frozen=True)
class RequestOutput:
    """What one step produced for one request: new tokens and text since its previous output."""

    request_id: str
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None  # stop, length, abort, or error (then `error` says why)
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    error: str | None = None  # why the request failed, when finish_reason is "error"
    # One per token of `token_ids` when the request asked for logprobs (SamplingParams.logprobs).
    logprobs: tuple[TokenLogprobs, ...] = ()


@dataclass(frozen=True)
class StepOutput:
    """What one step did: the outputs of the requests that sampled a token, and the tokens each
    scheduled request computed (a prompt chunk computes many and may sample none).

    Iterating it yields its outputs, so callers that only stream text read it as the list it was."""

    outputs: tuple[RequestOutput, ...] = ()
    num_computed_tokens: Mapping[str, int] = field(default_factory=dict)  # request id -> tokens
    # request id -> the work of those tokens, in passes through the weights (engine/work_cost.py: a token
    # that attends to a long context costs more); a request missing here cost its tokens.
    computed_work: Mapping[str, float] = field(default_factory=dict)

    @property
    def total_computed_tokens(self) -> int:
        return sum(self.num_computed_tokens.values())

    def work_of(self, request_id: str) -> float:
        """The work the request's computed tokens cost (their count, if the engine did not say)."""
        return self.computed_work.get(request_id, float(self.num_computed_tokens.get(request_id, 0)))

    @property
    def is_empty(self) -> bool:
        return not self.num_computed_tokens and not self.outputs

    def __iter__(self) -> Iterator[RequestOutput]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for observability (kernel counters, /metrics) and for the kernel's suspend choice."""

    num_running: int
    num_waiting: int
    num_suspended: int
    num_blocks: int
    num_free_blocks: int
    num_cached_blocks: int
    block_size: int
    kv_cache_bytes: int
    prefix_cache_queries: int  # prompt tokens looked up
    prefix_cache_hits: int  # of those, served from the cache
    prefill_tokens_per_second: float  # recent measured rate (for recompute costs and wait estimates)


@runtime_checkable
class Engine(Protocol):
    """An engine as the kernel sees it. See the module docstring for the rules of each call."""

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer: system calls encode prompts (and chats, by its template) with it."""
        ...

    @property
    def context_length(self) -> int:
        """The model's context window, in tokens."""
        ...

    @property
    def max_sequence_tokens(self) -> int:
        """The longest sequence that can ever be resident: the context window or the whole KV pool."""
        ...

    @property
    def max_num_seqs(self) -> int:
        """How many requests one step can run: the kernel's policy fills this many slots."""
        ...

    @property
    def memory_bytes(self) -> int:
        """Bytes the engine holds (weights, KV pool, swap space): what residency charges it."""
        ...

    def add(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        cache_namespace: str = "default",
    ) -> None:
        """Hold a new request, queued for the next steps. Raises an LLMasOSError for a request that
        can never run (too long for the context or the pool)."""
        ...

    def step(self, request_ids: Collection[str] | None = None) -> StepOutput:
        """Run one forward pass over the requests held (or only `request_ids`); commits nothing if it
        raises."""
        ...

    def abort(self, request_id: str) -> None:
        """Drop a request at once, returning its KV blocks (RequestNotFoundError if not held)."""
        ...

    def suspend(self, request_id: str, mode: SuspendMode | str = SuspendMode.SWAP) -> SuspendReport:
        """Set a request aside until `resume`, its KV kept where `mode` says. One set aside with its
        KV kept in the pool (KEEP) may be suspended again to move the KV out."""
        ...

    def resume(self, request_id: str) -> SuspendReport:
        """Make a suspended request runnable again, exactly where it stopped."""
        ...

    def suspend_costs(self, request_id: str) -> dict[SuspendMode, SuspendCost]:
        """What suspending this request would cost in each mode, from measured rates."""
        ...

    def stats(self) -> EngineStats:
        """Queue lengths, KV blocks and measured rates, now."""
        ...


@runtime_checkable
class PlacedEngine(Protocol):
    """An engine whose requests run on several machines (`llmasos.cluster.ClusterEngine`): the kernel
    asks it where each request runs now, for the process table's `node` column and the audit row."""

    def node_of(self, request_id: str) -> str | None:
        """The node running `request_id` now (it may move when a node fails), None if not held."""
        ...
