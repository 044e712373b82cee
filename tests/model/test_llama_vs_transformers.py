"""The model against an independent reference: Hugging Face transformers on the same files.

Tolerances: float32 logits agree within 1e-4 (absolute) on the tiny models and 2e-3 on the real
135M model, whose logits reach ~40; greedy tokens must be identical.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.model.loader import load_model
from tests.helpers.reference import full_logits, hf_greedy, hf_logits, hf_model_from_gguf
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf, write_tiny_hf_folder

Q = gguf.GGMLQuantizationType
PROMPTS = ["Hello world", "The capital of France is", "def main(): return 0", "12345 + 678 = ?"]


def _check_against_transformers(path: Path, atol: float = 1e-4) -> None:
    ours = load_model(path)
    theirs = hf_model_from_gguf(path)
    for prompt in PROMPTS:
        ids = ours.tokenizer.encode(prompt)
        torch.testing.assert_close(full_logits(ours, ids), hf_logits(theirs, ids), atol=atol, rtol=0)


@pytest.mark.parametrize(
    "spec",
    [
        TinySpec(),
        TinySpec(tie_embeddings=False, seed=1),
        TinySpec(architecture="qwen2", seed=2),
        TinySpec(heads=4, kv_heads=4, seed=3),  # plain multi-head attention
        TinySpec(rope_theta=500000.0, seed=4),
    ],
    ids=["llama-gqa", "untied", "qwen2-bias", "mha", "rope-theta"],
)
def test_tiny_architectures_match_transformers(tmp_path: Path, spec: TinySpec) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", spec)
    _check_against_transformers(path)


@pytest.mark.parametrize("qtype", [Q.F16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1], ids=lambda q: q.name)
def test_quantized_gguf_matches_transformers(tmp_path: Path, qtype: Q) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(qtype=qtype, seed=5))
    _check_against_transformers(path)


def test_quantized_weights_dequantize_to_the_original_within_format_error(tmp_path: Path) -> None:
    """Loading undoes the Q/K permutation: each fused slice equals the HF-layout source weight."""
    path, weights = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(qtype=Q.Q8_0, seed=6))
    layer = load_model(path).model.layers[0]
    q_size = 4 * 16
    q = layer.qkv_proj.weight[:q_size]
    src = torch.from_numpy(weights["model.layers.0.self_attn.q_proj.weight"])
    # Q8_0 error is at most half a step of a 32-value block's scale (max|w|/127).
    assert (q - src).abs().max() < src.abs().max() / 127
    assert (q - src).abs().max() < (q - src.flip(0)).abs().max()


def test_hf_folder_loads_the_same_model_as_gguf(tmp_path: Path) -> None:
    spec = TinySpec(seed=7, tie_embeddings=False)
    path, weights = write_tiny_gguf(tmp_path / "m.gguf", spec)
    from_gguf = load_model(path)
    folder = write_tiny_hf_folder(tmp_path / "hf", spec, weights, from_gguf.tokenizer.backend.to_str())
    from_folder = load_model(folder)
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    for prompt in PROMPTS:
        ids = from_gguf.tokenizer.encode(prompt)
        assert from_folder.tokenizer.encode(prompt) == ids
        torch.testing.assert_close(
            full_logits(from_folder, ids), full_logits(from_gguf, ids), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            full_logits(from_folder, ids), hf_logits(reference, ids), atol=1e-4, rtol=0
        )


@pytest.mark.real_model
def test_default_model_matches_transformers(default_gguf_path: Path) -> None:
    """First 32 greedy tokens equal transformers' for several chat prompts; logits within 2e-3."""
    engine = LLMEngine.from_path(str(default_gguf_path), EngineConfig(dtype="float32"))
    tok = engine.tokenizer
    reference = hf_model_from_gguf(default_gguf_path)
    questions = [
        "What is the capital of France?",
        "Write a Python function that adds two numbers.",
        "Name three colors of the rainbow.",
        "Explain what an operating system does, in one sentence.",
    ]
    prompts = [tok.encode_chat([{"role": "user", "content": q}]) for q in questions]
    ours = engine.generate(prompts, SamplingParams(max_tokens=32, temperature=0))
    stop_ids = sorted(tok.stop_token_ids)
    for ids, (_, our_tokens) in zip(prompts, ours, strict=True):
        assert our_tokens == hf_greedy(reference, ids, 32, stop_ids)
    logits_diff = (full_logits(engine.loaded, prompts[0]) - hf_logits(reference, prompts[0])).abs().max()
    assert logits_diff < 2e-3
    assert "Paris" in ours[0][0]
