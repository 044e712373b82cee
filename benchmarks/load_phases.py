"""The two sides of `server_load.py`'s comparison, measured alike in short alternating phases.

- `EngineAlone`: the engine in the benchmark's own process (loaded once, the server's config), with
  as many sequences in flight as the server has clients. Each phase starts them all at once, as the
  clients' first requests arrive at once; each finished one is replaced at once by the next prompt,
  as a client sends its next request when its last one ends (so every request's prefill is in it).
- `StepFigures`: what an engine's steps did over a window (the engine alone's own count; the
  server's from its /metrics counters).
- `Timeline`: where a server client's cycle goes, from the client's own timestamps: the time from
  sending a request to its response headers, to its first token, from its last token to `[DONE]`,
  and from `[DONE]` to sending the next one. The engine alone spends none of these; each second a
  client spends in them is a second its sequence is missing from the server's batch.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import astuple, dataclass

PROMPTS = [
    "Give me one tip for sleeping better.",
    "What is the capital of Italy?",
    "Write a haiku about rain.",
    "Name three primary colors.",
    "Explain what a CPU does in one sentence.",
    "Why is the sky blue?",
    "Suggest a name for a cat.",
    "What is 12 times 12?",
]


@dataclass
class StepFigures:
    """What the engine's steps did over a window: how full each batch was and how long it took."""

    steps: float = 0.0
    seconds: float = 0.0  # inside engine steps
    generated: float = 0.0  # sampled tokens: one per sequence that reached its last token
    computed: float = 0.0  # prompt and decode tokens through the model

    def __sub__(self, other: StepFigures) -> StepFigures:
        return StepFigures(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __add__(self, other: StepFigures) -> StepFigures:
        return StepFigures(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def ms_a_step(self) -> float:
        return 1000 * self.seconds / max(self.steps, 1)

    @property
    def sequences_a_step(self) -> float:
        return self.generated / max(self.steps, 1)

    def describe(self, wall_seconds: float) -> str:
        return (
            f"{self.steps / wall_seconds:.1f} steps/s, {self.ms_a_step:.1f} ms a step, "
            f"{self.sequences_a_step:.1f} sequences sampled and {self.computed / max(self.steps, 1):.1f} "
            f"tokens computed a step, {self.seconds / wall_seconds:.0%} of the time in steps"
        )


class EngineAlone:
    """The engine with no server around it, at the server's concurrency and arrival pattern."""

    def __init__(self, model_path: str, sequences: int, max_tokens: int) -> None:
        from llmasos.config import EngineConfig
        from llmasos.engine.engine import LLMEngine
        from llmasos.engine.sampling import SamplingParams
        from llmasos.engine.threads import claim_compute_threads

        claim_compute_threads(EngineConfig().num_threads)  # as the server's kernel thread does
        self.engine = LLMEngine.from_path(model_path, EngineConfig())
        self.params = SamplingParams(max_tokens=max_tokens, temperature=0.7)
        self.prompts = [self.engine.tokenizer.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
        self.sequences = sequences
        self.live: set[str] = set()
        self.added = 0

    def phase(self, warmup: float, seconds: float) -> tuple[float, StepFigures, float]:
        """Generated tokens/s over `seconds` after `warmup` seconds from all sequences starting at
        once (as the server's phase is measured), its step figures and the seconds it took (to the
        end of the step running at `seconds`); the phase's unfinished requests are dropped."""
        self._run(time.perf_counter() + warmup)
        start = time.perf_counter()
        figures = self._run(start + seconds)
        elapsed = time.perf_counter() - start
        for request_id in self.live:
            self.engine.abort(request_id)  # returns its KV blocks at once
        self.live.clear()
        return figures.generated / elapsed, figures, elapsed

    def _run(self, until: float) -> StepFigures:
        figures = StepFigures()
        while time.perf_counter() < until:
            while len(self.live) < self.sequences:
                request_id = f"r{self.added}"
                self.engine.add(request_id, self.prompts[self.added % len(self.prompts)], self.params)
                self.live.add(request_id)
                self.added += 1
            started = time.perf_counter()
            step = self.engine.step()
            figures.seconds += time.perf_counter() - started
            figures.steps += 1
            figures.computed += step.total_computed_tokens
            for output in step:
                figures.generated += len(output.token_ids)
                if output.finished:
                    self.live.discard(output.request_id)
        return figures


@dataclass
class Timeline:
    """Mean seconds of each part of a completed request's cycle, seen from its client."""

    requests: int
    to_headers: float  # sent -> response headers (parsing, auth, tokenizing, admission, audit start row)
    to_first_token: float  # headers -> first token (the rest of the step running, then the prefill step)
    decoding: float  # first token -> last token
    to_done: float  # last token -> `[DONE]` (the final event, its audit end row, usage chunk)
    to_next: float  # `[DONE]` -> the client's next request sent
    step: float  # a decode step as the clients saw it: first -> last token over the tokens between

    @classmethod
    def of(cls, results: list[dict]) -> Timeline | None:
        done = [
            r
            for r in results
            if r["outcome"] == "completed" and r["tokens"] > 1 and r["times"]["last"] > r["times"]["first"]
        ]  # a stream that fell behind may get all its tokens in one chunk: no step to see
        if not done:
            return None

        def mean(a: str, b: str) -> float:
            return statistics.fmean(r["times"][b] - r["times"][a] for r in done)

        gaps = [r["times"]["next"] - r["times"]["done"] for r in done if "next" in r["times"]]
        step = statistics.fmean((r["times"]["last"] - r["times"]["first"]) / (r["tokens"] - 1) for r in done)
        return cls(
            len(done),
            mean("sent", "headers"),
            mean("headers", "first"),
            mean("first", "last"),
            mean("last", "done"),
            statistics.fmean(gaps) if gaps else 0.0,
            step,
        )

    @property
    def idle(self) -> float:
        """Seconds of a cycle the client's sequence is in no step: all but decoding and the prefill
        step (which samples the first token, as it does for the engine alone)."""
        return self.to_headers + max(0.0, self.to_first_token - self.step) + self.to_done + self.to_next

    def describe(self, clients: int) -> str:
        """Each part in ms and in decode steps, and the sequences this leaves out of each step."""
        parts = {
            "send -> headers": self.to_headers,
            "headers -> first token": self.to_first_token,
            "first -> last token": self.decoding,
            "last token -> [DONE]": self.to_done,
            "[DONE] -> next request": self.to_next,
        }
        cycle = self.to_headers + self.to_first_token + self.decoding + self.to_done + self.to_next
        each = "; ".join(f"{name} {1000 * s:.0f} ms ({s / self.step:.1f} steps)" for name, s in parts.items())
        return (
            f"{each}; a step {1000 * self.step:.0f} ms; idle (not in a step) {1000 * self.idle:.0f} ms = "
            f"{self.idle / self.step:.1f} steps of a {cycle / self.step:.1f}-step cycle: about "
            f"{clients * self.idle / cycle:.1f} of {clients} sequences missing from each step"
        )
