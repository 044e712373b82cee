"""Sampling parameters and the sampler that turns a batch of logits into next tokens.

Each sequence has its own parameters and, when seeded, its own random generator, so a seeded
request gives the same output whatever else shares its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field

import torch

from llmasos.errors import InvalidSamplingParamsError


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens and when it stops. Validated on construction."""

    max_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy
    top_k: int = 0  # 0 disables top-k
    top_p: float = 1.0  # 1 disables nucleus sampling
    repetition_penalty: float = 1.0  # 1 disables; >1 discourages tokens already in the context
    seed: int | None = None  # same seed, same prompt, same output
    stop: tuple[str, ...] = ()  # stop strings; the output ends before the first one
    stop_token_ids: tuple[int, ...] = ()  # in addition to the model's end-of-turn tokens
    ignore_eos: bool = False  # benchmarks generate exactly max_tokens
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        def bad(message: str) -> None:
            raise InvalidSamplingParamsError(message)

        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            bad(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not _is_real(self.temperature) or not 0 <= self.temperature <= 100:
            bad(f"temperature must be a number from 0 (greedy) to 100, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            bad(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not _is_real(self.top_p) or not 0 < self.top_p <= 1:
            bad(f"top_p must be in (0, 1] (1 disables it), got {self.top_p!r}")
        if not _is_real(self.repetition_penalty) or not 0 < self.repetition_penalty <= 10:
            bad(f"repetition_penalty must be in (0, 10] (1 disables it), got {self.repetition_penalty!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            bad(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if not all(isinstance(s, str) and s for s in self.stop):
            bad(f"stop must be a list of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SamplingState:
    """Per-sequence sampler state: its parameters and, if seeded, its generator."""

    params: SamplingParams
    generator: torch.Generator | None = field(default=None)

    @classmethod
    def create(cls, params: SamplingParams, device: torch.device) -> SamplingState:
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(params.seed)
        return cls(params=params, generator=generator)


class Sampler:
    """Picks one token per row of a logits batch, honouring each row's own parameters."""

    def __call__(
        self,
        logits: torch.Tensor,  # (B, vocab) float32
        states: SequenceABC[SamplingState],
        context_ids: SequenceABC[SequenceABC[int]],  # tokens seen so far, for the repetition penalty
    ) -> list[int]:
        logits = logits.float().clone()
        self._apply_repetition_penalty(logits, states, context_ids)
        greedy = logits.argmax(dim=-1)
        if all(s.params.is_greedy for s in states):
            return greedy.tolist()
        tokens = greedy.tolist()
        for row, state in enumerate(states):
            if not state.params.is_greedy:
                tokens[row] = self._sample_row(logits[row], state)
        return tokens

    @staticmethod
    def _apply_repetition_penalty(
        logits: torch.Tensor, states: SequenceABC[SamplingState], context_ids: SequenceABC[SequenceABC[int]]
    ) -> None:
        # CTRL-style, as transformers does it: divide positive logits, multiply negative ones.
        for row, state in enumerate(states):
            penalty = state.params.repetition_penalty
            if penalty == 1.0 or not context_ids[row]:
                continue
            ids = torch.tensor(sorted(set(context_ids[row])), device=logits.device)
            seen = logits[row, ids]
            logits[row, ids] = torch.where(seen > 0, seen / penalty, seen * penalty)

    @staticmethod
    def _sample_row(logits: torch.Tensor, state: SamplingState) -> int:
        params = state.params
        logits = logits / params.temperature
        if params.top_k and params.top_k < logits.shape[-1]:
            kth = torch.topk(logits, params.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            # Drop a token when the tokens before it already reach top_p; the first always stays.
            drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= params.top_p
            logits = logits.masked_fill(drop_sorted.scatter(0, order, drop_sorted), float("-inf"))
        probs = logits.softmax(-1)
        return int(torch.multinomial(probs, 1, generator=state.generator).item())
