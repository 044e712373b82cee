"""The real Gemma 3 270M (a K-quant GGUF: Q4_K, Q6_K, Q5_0, Q8_0) against transformers on the same file,
pulled through the catalog once per suite run (see `gemma3_gguf_path`). Kept to one load of each model:
the suite runs it on every `make test`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.model.weight_formats import resolve_weight_format
from tests.helpers.reference import full_logits, hf_greedy, hf_logits, hf_model_from_gguf

# A base model: prompts to continue, not questions.
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",  # a run of spaces: one token in Gemma's vocabulary
    "Once upon a time, in a small village,",
]


@pytest.mark.real_model
def test_gemma3_270m_matches_transformers(gemma3_gguf_path: Path) -> None:
    """First 32 greedy tokens equal transformers' for each prompt; float32 logits within 2e-3."""
    engine = LLMEngine.from_path(str(gemma3_gguf_path), EngineConfig(dtype="float32"))
    tok = engine.tokenizer
    assert engine.loaded.config.architecture == "gemma3" and not tok.has_chat_template
    reference = hf_model_from_gguf(gemma3_gguf_path)
    prompts = [tok.encode(p) for p in PROMPTS]
    assert prompts[1][-1] == tok.backend.token_to_id("▁▁▁▁")  # not an id past the embeddings
    ours = engine.generate(prompts, SamplingParams(max_tokens=32, temperature=0))
    stop_ids = sorted(tok.stop_token_ids)
    for ids, (_, our_tokens) in zip(prompts, ours, strict=True):
        assert our_tokens == hf_greedy(reference, ids, 32, stop_ids)
    logits_diff = (full_logits(engine.loaded, prompts[0]) - hf_logits(reference, prompts[0])).abs().max()
    print(f"gemma-3-270m: max |logit difference| against transformers: {logits_diff:.2e}")
    assert logits_diff < 2e-3
    assert "France" in ours[0][0]  # a base model continues: "the capital of the country of France"
    _check_default_format(engine, reference, prompts)


def _check_default_format(engine: LLMEngine, reference, prompts: list[list[int]]) -> None:
    """The engine's default CPU format (what `serve` runs): the same float model converted as the runner
    converts it, against transformers. Not within llama.cpp's noise yet: Gemma 3 loads through float32 and
    every projection is re-quantized to 4-bit groups of its own (Q6_K, Q5_0 and Q8_0 parts included)
    instead of read as the file's blocks, as Qwen's and Llama's are (packed_build.py). On 8 prompts
    (benchmarks/model_parity.py) that gave mean |logit difference| 0.96 and top-1 5/8, against llama.cpp's
    0.21 and 7/8 on the same file. These bounds pin today's error so that it only shrinks."""
    weight_format = resolve_weight_format("auto", torch.device("cpu"))
    quantized = engine.loaded.model.quantize(weight_format, keep_dense=False)
    model = SimpleNamespace(model=quantized, config=engine.loaded.config)
    errors = []
    for ids in prompts:
        ours, theirs = full_logits(model, ids)[-1], hf_logits(reference, ids)[-1]
        errors.append((ours - theirs).abs().mean().item())
        print(f"gemma-3-270m {weight_format}: mean |logit difference| {errors[-1]:.3f}")
    assert weight_format == "int4"
    assert max(errors) < 1.5
    ours, theirs = full_logits(model, prompts[0])[-1], hf_logits(reference, prompts[0])[-1]
    assert ours.argmax() == theirs.argmax()  # " the": a margin of 2.3 in transformers' logits
