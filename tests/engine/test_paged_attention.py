"""Paged attention equals plain attention: logits through scattered KV blocks, chunked prefill and
batched decode steps match one contiguous causal forward pass over the same tokens."""

from __future__ import annotations

import random
from collections import OrderedDict

import torch

from llmasos.engine.sampling import SamplingParams
from tests.helpers.engines import engine_with, random_prompts
from tests.helpers.reference import full_logits


def test_scattered_blocks_and_mixed_steps_give_the_plain_logits(tiny_loaded) -> None:
    engine = engine_with(
        tiny_loaded, num_blocks=64, max_num_batched_tokens=7, enable_prefix_caching=False, dtype="float32"
    )
    order = list(range(64))
    random.Random(0).shuffle(order)  # blocks handed out in random order: tables are scattered
    engine.block_manager.free_block_ids = OrderedDict.fromkeys(order)
    seen: dict[int, list[torch.Tensor]] = {}

    def recorder(index: int):
        def record(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            seen.setdefault(index, []).append(logits.clone())
            return logits

        return record

    prompts = random_prompts([13, 5, 22], seed=1)
    for i, prompt in enumerate(prompts):
        params = SamplingParams(max_tokens=6, temperature=0, logits_processors=(recorder(i),))
        engine.add(f"r{i}", prompt, params)
    outputs: dict[str, list[int]] = {}
    while engine.has_unfinished_requests:
        for out in engine.step():
            outputs.setdefault(out.request_id, []).extend(out.token_ids)
    for i, prompt in enumerate(prompts):
        tokens = prompt + outputs[f"r{i}"]
        plain = full_logits(tiny_loaded, tokens[:-1])  # the last token was sampled, never computed
        for step, logits in enumerate(seen[i]):
            torch.testing.assert_close(logits, plain[len(prompt) - 1 + step], atol=1e-4, rtol=0)
