"""Per-token cost of constrained decoding against free decoding, on the default model.

For a batch of B sequences (B = 1 and 8) over the same prompt, the constrained run writes a JSON
value under a pydantic-style schema (nested object, Optional, enum, array) at temperature 0.8, each
sequence until its value is complete; the free run then writes exactly as many tokens per sequence
(ignoring end tokens) from the same prompt. Per-token time is the run's wall time over its tokens,
prefill included in both; the ratio is constrained / free. The grammar is built once per request
and is part of the constrained time (as it is in a server).

    python benchmarks/constrained_overhead.py [--quick] [--path model.gguf] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from llmasos.config import EngineConfig
from llmasos.engine import constrained
from llmasos.engine.constrained import Grammar
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams

DEFAULT_PATH = Path(".cache/test-models/SmolLM2-135M-Instruct.Q4_1.gguf")
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"$ref": "#/$defs/City"},
        "role": {"enum": ["baker", "teacher", "engineer", "other"]},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
        "nickname": {"anyOf": [{"type": "string", "maxLength": 16}, {"type": "null"}]},
    },
    "required": ["name", "age", "city", "role", "hobbies", "nickname"],
    "additionalProperties": False,
    "$defs": {
        "City": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "country": {"type": ["string", "null"]}},
            "required": ["name", "country"],
        }
    },
}
TEXT = "John Smith is 42 years old, lives in Paris and works as a baker. He likes bread, chess and jazz."
MAX_TOKENS = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one round per batch size instead of five")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = LLMEngine.from_path(str(args.path), EngineConfig())
    constrained.grammar_tokenizer(engine.tokenizer)  # once per model, not per request: kept out
    messages = [{"role": "user", "content": f"Describe the person as JSON: {TEXT}"}]
    prompt = engine.tokenizer.encode_chat(messages)
    rounds = 1 if args.quick else 5
    _run_once(engine, prompt, 1)  # warm-up: kernels, allocator
    print(f"model {args.path.name}, threads {args.threads}, prompt {len(prompt)} tokens, {rounds} round(s)")
    for batch in (1, 8):
        ratios, per_token = [], []
        for round_ in range(rounds):
            constrained_ms, free_ms, tokens = _run_once(engine, prompt, batch, seed=round_)
            ratios.append(constrained_ms / free_ms)
            per_token.append((constrained_ms, free_ms, tokens))
        c, f, n = per_token[len(per_token) // 2]
        print(
            f"B={batch}: {n} tokens; constrained {c:.2f} ms/token, free {f:.2f} ms/token; "
            f"ratio {statistics.median(ratios):.2f}x (median of {rounds})"
        )


def _run_once(engine: LLMEngine, prompt: list[int], batch: int, seed: int = 0) -> tuple[float, float, int]:
    """(constrained ms/token, free ms/token, tokens) of one batch."""
    start = time.perf_counter()
    grammar = Grammar.json_schema(SCHEMA, engine.tokenizer, MAX_TOKENS)
    params = [
        SamplingParams(
            max_tokens=grammar.max_tokens,
            temperature=0.8,
            seed=seed * 100 + i,
            repetition_penalty=1.0,
            logits_processors=(grammar.processor(),),
        )
        for i in range(batch)
    ]
    outputs = _generate(engine, prompt, params)
    constrained_s = time.perf_counter() - start
    counts = [len(tokens) for tokens in outputs]
    free = [
        SamplingParams(max_tokens=n, temperature=0.8, seed=seed * 100 + i, ignore_eos=True)
        for i, n in enumerate(counts)
    ]
    start = time.perf_counter()
    _generate(engine, prompt, free)
    free_s = time.perf_counter() - start
    tokens = sum(counts)
    return 1e3 * constrained_s / tokens, 1e3 * free_s / tokens, tokens


def _generate(engine: LLMEngine, prompt: list[int], params: list[SamplingParams]) -> list[list[int]]:
    """Each sequence with its own params, batched together in shared steps; token ids per sequence."""
    ids = [f"s{i}-{time.perf_counter_ns()}" for i in range(len(params))]
    tokens: dict[str, list[int]] = {i: [] for i in ids}
    for request_id, p in zip(ids, params, strict=True):
        engine.add(request_id, prompt, p)
    while any(i in engine.requests for i in ids):
        for output in engine.step():
            tokens[output.request_id] += output.token_ids
    return [tokens[i] for i in ids]


if __name__ == "__main__":
    main()
