"""The real Gemma 3 270M (a K-quant GGUF: Q4_K, Q6_K, Q5_0, Q8_0) against transformers on the same file,
pulled through the catalog once per suite run (see `gemma3_gguf_path`). Kept to one load of each model:
the suite runs it on every `make test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
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
