"""The engine: one model, many sequences. `add`, `step`, `abort`; the loop reads like a sentence.

The engine offers mechanism and never decides who runs: the kernel above it adds and aborts
requests and calls `step()`; the engine's own scheduler only packs what it was given. `LLMEngine`
implements `llmasos.engine.protocol.Engine`, which is all the kernel knows of it; `requests`,
`stream` and `generate` are for callers that own an engine alone (the CLI, tests, benchmarks).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Iterator

import torch

from llmasos.config import DEFAULT_MODEL, EngineConfig
from llmasos.engine.block_manager import BlockManager
from llmasos.engine.detokenizer import IncrementalDetokenizer
from llmasos.engine.model_runner import ModelRunner, idle_cache_blocks, packed_weight_format
from llmasos.engine.protocol import EngineStats, RequestOutput, StepOutput
from llmasos.engine.requests import Request
from llmasos.engine.sampling import SamplerOutput, SamplingParams, SamplingState
from llmasos.engine.scheduler import Scheduler, SchedulerOutput
from llmasos.engine.sequence import FinishReason, Sequence, SequenceStatus
from llmasos.engine.suspend import Suspension
from llmasos.engine.work_cost import WorkCost
from llmasos.errors import (
    ContextWindowExceededError,
    InvalidRequestError,
    InvalidSamplingParamsError,
    KVCacheCapacityError,
    RequestNotFoundError,
)
from llmasos.model.loader import LoadedModel, load_model, resolve_dtype
from llmasos.model.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

__all__ = ["EngineStats", "LLMEngine", "RequestOutput", "StepOutput"]  # the dataclasses live in protocol.py


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class LLMEngine(Suspension):
    """Serves several sequences of one model in shared forward passes; `suspend`, `resume` and
    `suspend_costs` come from `Suspension` (suspend.py)."""

    def __init__(
        self, loaded: LoadedModel, config: EngineConfig | None = None, *, owns_load: bool = False
    ) -> None:
        """owns_load: no one else uses `loaded`, so its float weights go once converted (`from_path`)."""
        self.config = config or EngineConfig()
        if self.config.num_threads > 0:
            torch.set_num_threads(self.config.num_threads)
        self.loaded = loaded
        self.tokenizer: Tokenizer = loaded.tokenizer
        self.runner = ModelRunner(loaded, self.config, owns_load=owns_load)
        self.block_manager = BlockManager(
            self.runner.num_blocks,
            self.config.block_size,
            self.config.enable_prefix_caching,
            max_idle_cached_blocks=idle_cache_blocks(self.config, self.runner.kv_block_bytes),
        )
        self.scheduler = Scheduler(
            self.block_manager,
            self.config.max_num_seqs,
            self.config.max_num_batched_tokens,
            batch_invariant=self.config.batch_invariant,
        )
        self.requests: dict[str, Request] = {}  # live requests by id (the kernel never reads it)
        # Measured rates, smoothed: what recomputing a context or copying KV costs on this box.
        self.prefill_tokens_per_second = 1000.0
        self.copy_bytes_per_second = 5e9
        self.work_cost = WorkCost.for_model(loaded.config)

    @classmethod
    def from_path(cls, path: str, config: EngineConfig | None = None) -> LLMEngine:
        """An engine on a model file or folder."""
        config = config or EngineConfig()
        device = resolve_device(config.device)
        loaded = load_model(
            path,
            dtype=resolve_dtype(config.dtype, device),
            device=device,
            packed_format=packed_weight_format(config, device),
            keep_dense=config.dense_prefill_weights,
        )
        return cls(loaded, config, owns_load=True)

    @classmethod
    def from_library(cls, name: str = DEFAULT_MODEL, config: EngineConfig | None = None) -> LLMEngine:
        """An engine on a model of the library, by name or alias."""
        from llmasos.library.store import ModelStore

        return cls.from_path(str(ModelStore().model_path(name)), config)

    # ---- properties --------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        """The model's context window, or the configured `max_context_length` when that is smaller."""
        window = self.loaded.config.context_length
        return min(window, self.config.max_context_length) if self.config.max_context_length else window

    @property
    def max_sequence_tokens(self) -> int:
        """Longest sequence that can ever be resident: the context window or the whole KV pool."""
        return min(self.context_length, self.block_manager.num_blocks * self.block_manager.block_size)

    @property
    def max_num_seqs(self) -> int:
        return self.config.max_num_seqs

    @property
    def memory_bytes(self) -> int:
        """What the engine holds now: weights, the KV blocks it has touched, its swap space."""
        return self.runner.held_bytes(self.block_manager.num_touched_blocks)

    @property
    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished

    # ---- mechanism ---------------------------------------------------------------------------

    def add(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        *,
        cache_namespace: str = "default",
    ) -> None:
        """Queue a request. `prompt` is text (encoded as is) or token ids. Requests share cached
        prompt prefixes only within one `cache_namespace` (the kernel passes one per app)."""
        params = params or SamplingParams()
        if request_id in self.requests:
            raise InvalidRequestError(f"request id {request_id!r} is already live; use a new id")
        token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not token_ids:
            raise InvalidRequestError("the prompt is empty; give at least one token of input")
        vocab_size = self.loaded.config.vocab_size
        if any(not 0 <= t < vocab_size for t in token_ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab_size})")
        outside = [t for t, _ in params.logit_bias if t >= vocab_size]
        if outside:
            raise InvalidSamplingParamsError(
                f"logit_bias names token id {outside[0]}, outside the model's vocabulary of {vocab_size} "
                f"tokens; use ids from 0 to {vocab_size - 1}"
            )
        n = len(token_ids)
        if n >= self.context_length:
            raise ContextWindowExceededError(
                f"the prompt has {n} tokens but the model's context window is {self.context_length}; "
                f"shorten it by at least {n - self.context_length + 1} tokens"
            )
        if n >= self.max_sequence_tokens:
            raise KVCacheCapacityError(
                f"the prompt has {n} tokens but the KV cache holds at most {self.max_sequence_tokens}; "
                "shorten the prompt or give the engine a larger kv_cache_bytes"
            )
        max_tokens = min(params.max_tokens, self.max_sequence_tokens - n)
        sampling = SamplingState.create(params, self.runner.device)
        seq = Sequence(request_id, token_ids, sampling, max_tokens, cache_namespace=cache_namespace)
        detokenizer = IncrementalDetokenizer(
            self.tokenizer, stop_strings=params.stop, skip_special_tokens=params.skip_special_tokens
        )
        self.requests[request_id] = Request(seq, detokenizer)
        self.scheduler.add(seq)

    def take_over(
        self,
        request_id: str,
        prompt_ids: list[int],
        output_ids: list[int],
        params: SamplingParams | None = None,
        *,
        cache_namespace: str = "default",
    ) -> None:
        """Queue a request that generated `output_ids` on a lost cluster node, to continue here
        where it stopped (`Request.replay`; exactly so with EngineConfig.batch_invariant)."""
        vocab_size = self.loaded.config.vocab_size
        if any(not 0 <= t < vocab_size for t in output_ids):
            raise InvalidRequestError(f"output token ids must be in [0, {vocab_size})")
        self.add(request_id, prompt_ids, params, cache_namespace=cache_namespace)
        self.requests[request_id].replay(output_ids, vocab_size)

    def step(self, request_ids: Collection[str] | None = None) -> StepOutput:
        """Run one forward pass over the scheduled batch: what each request computed, and what each
        sampling request produced.

        `request_ids` limits the batch to those requests (the kernel steps them apart to find
        which one makes a step fail). A step that raises has committed nothing: no counter moved
        and no seeded generator advanced, so it can be retried."""
        plan = self.scheduler.schedule(request_ids)
        if plan.is_empty:
            if request_ids is None:
                self._check_not_stalled()
            return StepOutput()
        self._swap_in(plan)
        sampled = self._run(plan)
        samplers = [item.seq for item in plan.scheduled if item.samples]  # before the counters move
        work = {item.seq.seq_id: self._work(item.seq, item.num_new_tokens) for item in plan.scheduled}
        computed = self._update(plan)
        outputs = tuple(self._collect(samplers, sampled))
        if not self.requests:  # the last one ended: what it used goes back (model_runner)
            self.runner.release_idle_memory()
        return StepOutput(outputs, computed, work)

    def _check_not_stalled(self) -> None:
        # add() clamps every request to fit the pool, so only blocks held by sequences
        # suspended in KEEP mode can stop the queue; their owner must resume or move them.
        held = any(seq.block_table for seq in self.scheduler.suspended.values())
        if self.scheduler.has_unfinished and not held:
            raise RuntimeError(f"engine stalled with live sequences: {self.scheduler.waiting}")

    def _swap_in(self, plan: SchedulerOutput) -> None:
        for seq in plan.swapped_in:
            self.runner.swap_in(seq.block_table, seq.swapped_kv)
            seq.swapped_kv = None

    def _run(self, plan: SchedulerOutput) -> SamplerOutput:
        """The forward pass and the draws; on failure the seeded generators are put back as they
        were (the KV it wrote is rewritten identically on the retry)."""
        generators = [
            item.seq.sampling.generator
            for item in plan.scheduled
            if item.samples and item.seq.sampling.generator is not None
        ]
        saved = [g.get_state() for g in generators]
        start = time.perf_counter()
        try:
            sampled = self.runner.execute(plan.scheduled)
        except BaseException:
            for generator, state in zip(generators, saved, strict=True):
                generator.set_state(state)
            raise
        self._measure_prefill(plan, time.perf_counter() - start)
        return sampled

    def _work(self, seq: Sequence, tokens: int) -> float:
        """The work of the `tokens` the sequence computes next (before its counters move): one sampled
        token is decoded; anything else (a prompt's chunk, a recomputed context) is prefilled."""
        start = seq.num_computed_tokens
        if tokens == 1 and start >= seq.num_prompt_tokens:
            return self.work_cost.decode(start)
        return self.work_cost.prefill(start, tokens)

    def _update(self, plan: SchedulerOutput) -> dict[str, int]:
        """Commit the step: every scheduled sequence's computed tokens and its full blocks."""
        for item in plan.scheduled:
            item.seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.register_computed_blocks(item.seq)
        return {item.seq.seq_id: item.num_new_tokens for item in plan.scheduled}

    def _collect(self, samplers: list[Sequence], sampled: SamplerOutput) -> list[RequestOutput]:
        """Each sampled token into its request's output; a request whose token cannot be processed
        (a detokenizer or stop-check failure) ends alone, with the error in its output."""
        outputs = []
        draws = zip(samplers, sampled.token_ids, sampled.logprobs, strict=True)
        for seq, token_id, logprobs in draws:
            request = self.requests[seq.seq_id]
            try:
                output = request.accept(token_id, self.tokenizer.stop_token_ids, logprobs)
            except Exception as err:
                logger.exception("processing the token of request %s failed", seq.seq_id)
                self.abort(seq.seq_id)
                outputs.append(request.output([], "", error=f"{type(err).__name__}: {err}"))
                continue
            if output.finished:
                self.scheduler.remove(seq)
                del self.requests[seq.seq_id]
            outputs.append(output)
        return outputs

    def _measure_prefill(self, plan: SchedulerOutput, seconds: float) -> None:
        prefill_tokens = sum(s.num_new_tokens for s in plan.scheduled if s.num_new_tokens > 1)
        if prefill_tokens >= 64 and seconds > 0:
            self.prefill_tokens_per_second = 0.7 * self.prefill_tokens_per_second + 0.3 * (
                plan.num_batched_tokens / seconds
            )

    def abort(self, request_id: str) -> None:
        """Drop a live request at once; every KV block it held is returned."""
        request = self.requests.pop(request_id, None)
        if request is None:
            raise RequestNotFoundError(
                f"no live request {request_id!r}; it finished, was aborted, or never existed"
            )
        if request.seq.swapped_kv is not None:
            self.runner.release_swap(request.seq.swapped_kv)
        self.scheduler.remove(request.seq)
        request.seq.status = SequenceStatus.FINISHED
        request.seq.finish_reason = FinishReason.ABORT
        if not self.requests:
            self.runner.release_idle_memory()

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_suspended=len(self.scheduler.suspended),
            num_blocks=bm.num_blocks,
            num_free_blocks=bm.num_free_blocks,
            num_cached_blocks=bm.num_cached_blocks,
            block_size=bm.block_size,
            kv_cache_bytes=self.runner.kv_cache_bytes,
            prefix_cache_queries=bm.num_prefix_queries,
            prefix_cache_hits=bm.num_prefix_hits,
            prefill_tokens_per_second=self.prefill_tokens_per_second,
        )

    def _live(self, request_id: str) -> Request:
        request = self.requests.get(request_id)
        if request is None:
            raise RequestNotFoundError(
                f"no live request {request_id!r}; it finished, was aborted, or never existed"
            )
        return request

    # ---- conveniences for callers that own the engine alone (CLI, tests, benchmarks) ---------

    def stream(
        self, prompt: str | list[int], params: SamplingParams | None = None
    ) -> Iterator[RequestOutput]:
        """Run one request to completion, yielding its outputs as they come."""
        request_id = f"stream-{uuid.uuid4().hex}"
        self.add(request_id, prompt, params)
        try:
            while request_id in self.requests:
                for output in self.step():
                    if output.request_id == request_id:
                        yield output
        finally:
            if request_id in self.requests:
                self.abort(request_id)

    def generate(
        self, prompts: list[str | list[int]], params: SamplingParams | None = None
    ) -> list[tuple[str, list[int]]]:
        """Run several prompts together in shared steps; (text, output token ids) for each."""
        ids = [f"gen-{i}" for i in range(len(prompts))]
        texts = {i: "" for i in ids}
        tokens: dict[str, list[int]] = {i: [] for i in ids}
        for request_id, prompt in zip(ids, prompts, strict=True):
            self.add(request_id, prompt, params)
        try:
            while any(i in self.requests for i in ids):
                for output in self.step():
                    texts[output.request_id] += output.text
                    tokens[output.request_id] += output.token_ids
        finally:
            for request_id in ids:
                if request_id in self.requests:
                    self.abort(request_id)
        return [(texts[i], tokens[i]) for i in ids]
