"""What constrained decoding costs, on the real model's 49,152-token vocabulary.

Prints the one-time costs (llguidance's view of the vocabulary, once per model; a grammar, once
per request), the time of one logits-processor call (llguidance's mask plus applying it to the
logits) for a JSON schema and for a choice of labels, split into a request's first call and the
later ones, and the time of a decode step of 1 and of 8 sequences with and without a JSON-schema
constraint on every sequence.

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
# Long free strings: a constrained sequence that does not end within the measured steps.
LONG = {
    "type": "object",
    "properties": {"a": {"type": "string", "minLength": 300, "maxLength": 400}},
    "required": ["a"],
}
LABELS = ["positive", "negative", "neutral"]
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
    for name, make in (("JSON", lambda: grammar), ("choice", lambda: Grammar.choice(LABELS, tokenizer))):
        firsts, rest = [], []
        for seed in range(5):
            timed = Timed(make().processor())
            params = SamplingParams(max_tokens=512, temperature=0.8, seed=seed, logits_processors=(timed,))
            engine.generate([prompt], params)
            firsts.append(timed.seconds[0])
            rest += timed.seconds[1:]
        print(
            f"{name}: first call of a request median {1e3 * statistics.median(firsts):.2f} ms; "
            + _spread(rest)
        )
    for batch in (1, 8):
        free = _step_ms(engine, prompt, batch, lambda: ())
        json_ms = _step_ms(
            engine, prompt, batch, lambda: (Grammar.json_schema(LONG, tokenizer, 4000).processor(),)
        )
        print(f"decode step, batch {batch}: {free:.1f} ms free, {json_ms:.1f} ms constrained (median of 24)")


def _spread(seconds: list[float]) -> str:
    ms = sorted(1e3 * s for s in seconds)
    if not ms:
        return "no later calls"
    at = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    slow = sum(m > 5 for m in ms)
    return (
        f"later calls ({len(ms)}): median {at(0.5):.2f} ms, p90 {at(0.9):.2f}, p99 {at(0.99):.2f}, "
        f"max {ms[-1]:.2f}; {slow} over 5 ms"
    )


def _step_ms(engine: LLMEngine, prompt: list[int], batch: int, processors) -> float:
    """Median time of a decode step once every sequence of the batch has its first token."""
    for i in range(batch):
        # Neither run ends within the measured steps: the free one ignores end tokens, the
        # constrained one must write 300 characters before it may end.
        params = SamplingParams(
            max_tokens=200, temperature=1.0, seed=i, ignore_eos=True, logits_processors=processors()
        )
        engine.add(f"b{i}", prompt, params)
    while any(len(engine.requests[f"b{i}"].seq.output_token_ids) == 0 for i in range(batch)):
        engine.step()
    times = []
    for _ in range(24):
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    for i in range(batch):
        if f"b{i}" in engine.requests:
            engine.abort(f"b{i}")
    return 1e3 * statistics.median(times)


if __name__ == "__main__":
    main()
