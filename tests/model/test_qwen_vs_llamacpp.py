"""Qwen2.5-Coder-1.5B-Instruct (Q4_K_M: Q4_K and Q6_K tensors) through the packed int4 path, against
llama.cpp on the same file: greedy tokens and last-position logits.

Runs where the file is given (`LLMASOS_TEST_QWEN_GGUF=/path/to/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf`)
and llama-cpp-python is installed; about 2 GB of memory, one model at a time.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from tests.helpers.reference import full_logits

QWEN = Path(os.environ.get("LLMASOS_TEST_QWEN_GGUF", "/nonexistent"))
QUESTIONS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Summarize in one sentence: The James Webb Space Telescope observes the universe in infrared light.",
]
NEW_TOKENS = 32

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not QWEN.is_file(), reason="set LLMASOS_TEST_QWEN_GGUF to the Qwen2.5-1.5B GGUF"),
]


def _ours() -> tuple[list[list[int]], list[list[int]], np.ndarray, list[int]]:
    engine = LLMEngine.from_path(str(QWEN), EngineConfig(kv_cache_bytes=64 * 2**20, num_threads=2))
    tok = engine.tokenizer
    prompts = [tok.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    outputs = engine.generate(prompts, SamplingParams(max_tokens=NEW_TOKENS, temperature=0))
    logits = full_logits(engine.loaded, prompts[0])[-1].numpy()
    return prompts, [tokens for _, tokens in outputs], logits, sorted(tok.stop_token_ids)


def _llamacpp(prompts: list[list[int]], stop_ids: list[int]) -> tuple[list[list[int]], np.ndarray]:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(QWEN), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    answers = []
    for ids in prompts:
        llm.reset()
        tokens: list[int] = []
        for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            tokens.append(token)
            if token in stop_ids or len(tokens) == NEW_TOKENS:
                break
        answers.append(tokens)
    llm.reset()
    llm.eval(prompts[0])
    logits = np.array(llm.scores[len(prompts[0]) - 1], dtype=np.float32)
    del llm
    return answers, logits


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_greedy_tokens_and_logits_follow_llamacpp_on_the_same_file() -> None:
    prompts, ours, our_logits, stop_ids = _ours()
    gc.collect()
    theirs, their_logits = _llamacpp(prompts, stop_ids)
    agreed = [_common_prefix(a, b) for a, b in zip(ours, theirs, strict=True)]
    error = np.abs(our_logits - their_logits)
    print(f"\ngreedy tokens agreeing with llama.cpp, of {NEW_TOKENS}: {agreed}")
    print(
        f"last-position logits: max |diff| {error.max():.3f}, mean {error.mean():.4f}, "
        f"their spread {their_logits.std():.2f}"
    )
    assert int(np.argmax(our_logits)) == int(np.argmax(their_logits))
    assert error.mean() < 0.1 * their_logits.std()
    assert min(agreed) >= 8 and sum(agreed) >= 0.75 * sum(len(t) for t in theirs), agreed
