"""The engine: one model, many sequences. `add`, `step`, `abort`; the loop reads like a sentence.

The engine offers mechanism and never decides who runs: the kernel above it (a later layer) adds
and aborts requests and calls `step()`; the engine's own scheduler only packs what it was given.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from llmasos.config import DEFAULT_MODEL, EngineConfig
from llmasos.engine.block_manager import BlockManager
from llmasos.engine.detokenizer import IncrementalDetokenizer
from llmasos.engine.model_runner import ModelRunner
from llmasos.engine.sampling import SamplingParams, SamplingState
from llmasos.engine.scheduler import Scheduler
from llmasos.engine.sequence import FinishReason, Sequence, SequenceStatus
from llmasos.errors import (
    ContextWindowExceededError,
    InvalidRequestError,
    KVCacheCapacityError,
    RequestNotFoundError,
)
from llmasos.model.loader import LoadedModel, load_model, resolve_dtype
from llmasos.model.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestOutput:
    """What one step produced for one request: new tokens and text since its previous output."""

    request_id: str
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int


class _Request:
    """The engine's bookkeeping for one request: its sequence and its streaming detokenizer."""

    def __init__(self, seq: Sequence, detokenizer: IncrementalDetokenizer) -> None:
        self.seq = seq
        self.detokenizer = detokenizer


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class LLMEngine:
    """Serves several sequences of one model in shared forward passes."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        if self.config.num_threads > 0:
            torch.set_num_threads(self.config.num_threads)
        self.loaded = loaded
        self.tokenizer: Tokenizer = loaded.tokenizer
        self.runner = ModelRunner(loaded, self.config)
        self.block_manager = BlockManager(self.runner.num_blocks, self.config.block_size)
        self.scheduler = Scheduler(
            self.block_manager, self.config.max_num_seqs, self.config.max_num_batched_tokens
        )
        self.requests: dict[str, _Request] = {}

    @classmethod
    def from_path(cls, path: str, config: EngineConfig | None = None) -> LLMEngine:
        """An engine on a model file or folder."""
        config = config or EngineConfig()
        device = resolve_device(config.device)
        loaded = load_model(path, dtype=resolve_dtype(config.dtype, device), device=device)
        return cls(loaded, config)

    @classmethod
    def from_library(cls, name: str = DEFAULT_MODEL, config: EngineConfig | None = None) -> LLMEngine:
        """An engine on a model of the library, by name or alias."""
        from llmasos.library.store import ModelStore

        return cls.from_path(str(ModelStore().model_path(name)), config)

    # ---- properties --------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self.loaded.config.context_length

    @property
    def max_sequence_tokens(self) -> int:
        """Longest sequence that can ever be resident: the context window or the whole KV pool."""
        return min(self.context_length, self.block_manager.num_blocks * self.block_manager.block_size)

    @property
    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished

    # ---- mechanism ---------------------------------------------------------------------------

    def add(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None) -> None:
        """Queue a request. `prompt` is text (encoded as is) or token ids."""
        params = params or SamplingParams()
        if request_id in self.requests:
            raise InvalidRequestError(f"request id {request_id!r} is already live; use a new id")
        token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not token_ids:
            raise InvalidRequestError("the prompt is empty; give at least one token of input")
        if any(not 0 <= t < self.loaded.config.vocab_size for t in token_ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {self.loaded.config.vocab_size})")
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
        seq = Sequence(request_id, token_ids, SamplingState.create(params, self.runner.device), max_tokens)
        detokenizer = IncrementalDetokenizer(
            self.tokenizer, stop_strings=params.stop, skip_special_tokens=params.skip_special_tokens
        )
        self.requests[request_id] = _Request(seq, detokenizer)
        self.scheduler.add(seq)

    def step(self) -> list[RequestOutput]:
        """Run one forward pass over the scheduled batch; report what each sampling request produced."""
        plan = self.scheduler.schedule()
        if plan.is_empty:
            if self.scheduler.has_unfinished:  # add() clamps every request to fit, so this is a bug
                raise RuntimeError(f"engine stalled with live sequences: {self.scheduler.waiting}")
            return []
        sampled = iter(self.runner.execute(plan.scheduled))
        outputs = []
        for item in plan.scheduled:
            samples = item.samples  # read before the counter moves
            item.seq.num_computed_tokens += item.num_new_tokens
            if samples:
                outputs.append(self._postprocess(self.requests[item.seq.seq_id], next(sampled)))
        return outputs

    def abort(self, request_id: str) -> None:
        """Drop a live request at once; every KV block it held is returned."""
        request = self.requests.pop(request_id, None)
        if request is None:
            raise RequestNotFoundError(
                f"no live request {request_id!r}; it finished, was aborted, or never existed"
            )
        self.scheduler.remove(request.seq)
        request.seq.status = SequenceStatus.FINISHED
        request.seq.finish_reason = FinishReason.ABORT

    def _postprocess(self, request: _Request, token_id: int) -> RequestOutput:
        seq, detok = request.seq, request.detokenizer
        seq.append_token(token_id)
        params = seq.params
        # ignore_eos skips the model's end-of-turn tokens only; stop ids the caller named still stop,
        # as stop strings do (vLLM's semantics).
        is_stop_token = token_id in params.stop_token_ids or (
            not params.ignore_eos and token_id in self.tokenizer.stop_token_ids
        )
        text = "" if is_stop_token else detok.add(token_id)
        if is_stop_token or detok.stopped:
            seq.finish_reason = FinishReason.STOP
        elif seq.num_output_tokens >= seq.max_tokens:
            seq.finish_reason = FinishReason.LENGTH
        if seq.finish_reason is not None:
            if not detok.stopped:
                text += detok.flush()
            seq.status = SequenceStatus.FINISHED
            self.scheduler.remove(seq)
            del self.requests[seq.seq_id]
        return RequestOutput(
            request_id=seq.seq_id,
            token_ids=[token_id],
            text=text,
            finished=seq.is_finished,
            finish_reason=seq.finish_reason.value if seq.finish_reason else None,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=seq.num_output_tokens,
        )

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
