"""What constrained decoding costs per step, on the real model's 49,152-token vocabulary.

Generates the same requests with and without a constraint (a JSON schema; a choice of labels) and
prints: the time of one logits-processor call (median and 99th percentile: llguidance's mask plus
applying it), decode tokens/s of one stream and of a batch of 8 with and without the constraint,
and the one-time costs (the grammar tokenizer per model, a grammar per request).

    python benchmarks/constrained_decoding.py [--path model.gguf] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from llmasos.config import EngineConfig
from llmasos.engine import constrained
from llmasos.engine.constrained import ConstrainedLogits, Grammar
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams

DEFAULT_PATH = Path(".cache/test-models/SmolLM2-135M-Instruct.Q4_1.gguf")
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "city": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "employed": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "tags", "employed"],
}
TEXT = "John Smith is 42 years old, lives in Paris and works as a baker. He likes bread, chess and jazz."


class Timed:
    """A logits processor that records how long the wrapped one takes per call."""

    def __init__(self, inner: ConstrainedLogits) -> None:
        self.inner, self.seconds = inner, []

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.inner(output_ids, logits)
        self.seconds.append(time.perf_counter() - start)
        return out


def decode_rate(engine: LLMEngine, prompts: list[list[int]], make_params) -> tuple[float, int]:
    start = time.perf_counter()
    outputs = engine.generate(prompts, make_params())
    tokens = sum(len(ids) for _, ids in outputs)
    return tokens / (time.perf_counter() - start), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = LLMEngine.from_path(str(args.path), EngineConfig())
    tokenizer = engine.tokenizer
    start = time.perf_counter()
    constrained.grammar_tokenizer(tokenizer)
    seconds = time.perf_counter() - start
    print(f"grammar tokenizer for {tokenizer.vocab_size} tokens: {seconds:.2f} s (once per model)")
    start = time.perf_counter()
    grammar = Grammar.json_schema(SCHEMA, tokenizer, 512)
    print(f"JSON-schema grammar: {1e3 * (time.perf_counter() - start):.1f} ms per request")
    messages = [{"role": "user", "content": f"Extract name, age, city, tags, employed as JSON from: {TEXT}"}]
    prompt = tokenizer.encode_chat(messages)
    timed = Timed(grammar.processor())
    engine.generate(
        [prompt], SamplingParams(max_tokens=grammar.max_tokens, temperature=0, logits_processors=(timed,))
    )
    per_call = sorted(timed.seconds)
    print(
        f"processor call (JSON, {len(per_call)} steps): median {1e3 * statistics.median(per_call):.3f} ms, "
        f"p99 {1e3 * per_call[int(0.99 * (len(per_call) - 1))]:.3f} ms, first {1e3 * timed.seconds[0]:.3f} ms"
    )
    labels = Grammar.choice(["positive", "negative", "neutral"], tokenizer)
    timed_choice = Timed(labels.processor())
    engine.generate(
        [prompt],
        SamplingParams(max_tokens=labels.max_tokens, temperature=0, logits_processors=(timed_choice,)),
    )
    print(f"processor call (choice): median {1e3 * statistics.median(timed_choice.seconds):.3f} ms")
    for batch in (1, 8):
        for label in ("free", "json"):
            rates = [
                decode_rate(engine, [prompt] * batch, lambda label=label: _params(label, grammar))[0]
                for _ in range(3)
            ]
            print(
                f"batch {batch} {label}: {statistics.median(rates):.1f} tok/s (median of 3, prefill included)"
            )


def _params(label: str, grammar: Grammar) -> SamplingParams:
    # Sampled, so the free run does not stop early; the JSON run ends when its value is complete.
    processors = (grammar.processor(),) if label == "json" else ()
    return SamplingParams(
        max_tokens=64, temperature=0.8, seed=1, ignore_eos=label == "free", logits_processors=processors
    )


if __name__ == "__main__":
    main()
