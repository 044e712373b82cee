"""An engine on a node: an `LLMEngine` inside a Ray actor, stepped locally there.

The head's `ClusterEngine` makes one call per step per node (`step`), and gets back one `StepOutput`
holding every sequence's new tokens: nothing crosses per token. Continuous batching stays per node,
in the node's own engine, which runs batch invariant (`EngineConfig.batch_invariant`). `adopt` takes
over a request another node was running when it died: its prompt is prefilled and the tokens already
streamed are recomputed one per step, as that node computed them, so a greedy stream continues with the
very tokens it would have produced there; the detokenizer is fed those tokens first and a seeded
generator skips their draws, so the text that follows continues exactly where the dead node's stopped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from llmasos.engine.protocol import RequestOutput, StepOutput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineFacts:
    """What the head reads of a node's engine once, when it starts using it."""

    context_length: int
    max_sequence_tokens: int
    max_num_seqs: int
    memory_bytes: int
    block_size: int
    pid: int  # the actor's process (the benchmark reads its memory and CPU)


class EngineHost:
    """The body of the engine actor (`ray.remote(EngineHost)`): one model on this node."""

    def __init__(self, model_path: str, num_threads: int = 1, kv_cache_bytes: int | None = None) -> None:
        import dataclasses

        import torch

        from llmasos.config import EngineConfig
        from llmasos.engine.engine import LLMEngine

        torch.set_num_threads(max(1, num_threads))  # the node's CPUs, not the box's
        # Batch invariant: a request moved here from a lost node continues exactly (EngineConfig).
        config = EngineConfig(num_threads=max(1, num_threads), batch_invariant=True)
        if kv_cache_bytes:
            config = dataclasses.replace(config, kv_cache_bytes=kv_cache_bytes)
        if not Path(model_path).exists():
            raise FileNotFoundError(f"no model file at {model_path}")
        self.engine = LLMEngine.from_path(model_path, config)

    def facts(self) -> EngineFacts:
        e = self.engine
        return EngineFacts(
            e.context_length,
            e.max_sequence_tokens,
            e.max_num_seqs,
            e.memory_bytes,
            e.config.block_size,
            os.getpid(),
        )

    def tokenizer(self):  # -> Tokenizer
        return self.engine.tokenizer

    def add(self, request_id, prompt, params=None, cache_namespace: str = "default") -> None:
        self.engine.add(request_id, prompt, params, cache_namespace=cache_namespace)

    def adopt(
        self,
        request_id: str,
        prompt_ids: list[int],
        output_ids: list[int],
        params=None,
        cache_namespace: str = "default",
    ) -> None:
        """Hold a request that already produced `output_ids` elsewhere (`LLMEngine.take_over`)."""
        self.engine.take_over(request_id, prompt_ids, output_ids, params, cache_namespace=cache_namespace)

    def step(self, request_ids=None, num_steps: int = 1):  # -> StepOutput
        """Up to `num_steps` engine steps in one call, their outputs merged per request (the head's
        call, ~3 ms on a busy 2-core box, is then paid once per `num_steps` tokens). It stops early
        when nothing is left, and at a step that raises after others ran: that step committed
        nothing, so their outputs go back now and the next call raises it for the head to isolate."""
        steps = [self.engine.step(request_ids)]
        while (
            len(steps) < num_steps and self.engine.has_unfinished_requests and steps[-1].num_computed_tokens
        ):
            try:
                steps.append(self.engine.step(request_ids))
            except Exception:
                logger.warning("a step failed after %d in this call; returning those first", len(steps))
                break
        return merge_steps(steps)

    def abort(self, request_id: str) -> None:
        self.engine.abort(request_id)

    def suspend(self, request_id: str, mode):  # -> SuspendReport
        return self.engine.suspend(request_id, mode)

    def resume(self, request_id: str):  # -> SuspendReport
        return self.engine.resume(request_id)

    def suspend_costs(self, request_id: str):
        return self.engine.suspend_costs(request_id)

    def stats(self):  # -> EngineStats
        return self.engine.stats()

    def ping(self) -> bool:
        return True


def merge_steps(steps: list[StepOutput]) -> StepOutput:
    """Several steps' outputs as one: per request its tokens, text and logprobs in order, and its
    state (finished, counts) as of its last output; computed tokens and their work summed."""
    merged: dict[str, RequestOutput] = {}
    computed: dict[str, int] = {}
    work: dict[str, float] = {}
    for step in steps:
        for request_id, tokens in step.num_computed_tokens.items():
            computed[request_id] = computed.get(request_id, 0) + tokens
            work[request_id] = work.get(request_id, 0.0) + step.work_of(request_id)
        for out in step.outputs:
            before = merged.get(out.request_id)
            if before is not None:
                out = replace(
                    out,
                    token_ids=before.token_ids + out.token_ids,
                    text=before.text + out.text,
                    logprobs=before.logprobs + out.logprobs,
                )
            merged[out.request_id] = out
    return StepOutput(tuple(merged.values()), computed, work)
