"""What computing tokens costs the engine, by the context they attend to: the work a step reports.

A token's cost has two parts. Its pass through the weights (every linear layer's multiply-adds) is the
same at any position. Its attention reads the keys and values of every position before it, so it grows
with its position. On SmolLM2 (benchmarks/context_cost.py, one thread, AMD Zen 4) a decode token cost
0.97 ms at up to 256 positions of context, 2.1 short tokens' worth at 512, 4.6 at 1,024 and 9.1 at 2,048:
the larger of its pass through the weights and its attention, which grows by a pass for every ~235
positions. Counting tokens alone, an app whose streams ran to thousands of tokens of context was charged a
fair share of tokens while it took most of the engine's time, and every step it joined grew for every
other app (issue 20: a never-reading client's streams doubled a calm app's p95 stream time).

So the engine reports, beside the tokens each request computed, their work, in passes through the
weights: a decode token at position p costs max(1, p / `decode_positions`); a prefill token
1 + p / `prefill_positions` (its queries are computed together, so each key and value row read serves
them all: the same prompt's attention cost a quarter as much a position). Both figures come from the
model's shape: the weights' multiply-adds per token over the attention's multiply-adds per position read
(queries times keys and weights times values, every head of every layer; a sliding-window layer reads at
most its window), divided by how much dearer an attention multiply-add is than a weight's, measured
(float multiply-adds over scattered bfloat16 rows of the paged cache, against the int8 dot products of the
quantized weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmasos.model.config import ModelConfig

#: How many times dearer an attention multiply-add is than a weight's, in a decode token and in a prefill
#: token, measured with benchmarks/context_cost.py (one thread, AMD Zen 4). SmolLM2-135M Q4_1: a decode
#: token's attention cost a pass through the weights every ~235 positions, where the multiply-adds alone
#: say every 3,892 (16.6x); a prefill token's, every ~940 (4.1x). The same ratios predict Qwen2.5-1.5B
#: Q4_K_M's figures from its shape within 8%: 1,081 positions (measured 1,002) and 4,377 (measured 4,177).
DECODE_ATTENTION_RATIO = 16.6
PREFILL_ATTENTION_RATIO = 4.1


@dataclass(frozen=True)
class WorkCost:
    """The work of computing tokens at given positions, in passes through the weights."""

    #: Positions of context whose attention costs a decode token one pass through the weights.
    decode_positions: float
    #: Positions of context whose attention adds one pass to a prefill token's cost.
    prefill_positions: float
    #: Positions past which a sliding-window layer reads no more (None: no layer slides), and the share of
    #: the layers that slide.
    window: int | None = None
    sliding_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("decode_positions", "prefill_positions"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")

    @classmethod
    def for_model(cls, config: ModelConfig) -> WorkCost:
        """The cost of `config`'s tokens, from its shape (see the module docstring)."""
        layers = config.num_layers
        per_layer = config.hidden_size * (config.q_size + 2 * config.kv_size)  # q, k, v projections
        per_layer += config.q_size * config.hidden_size + 3 * config.hidden_size * config.intermediate_size
        weight_macs = layers * per_layer + config.vocab_size * config.hidden_size  # and the LM head
        attention_macs = layers * config.num_heads * config.head_dim * 2  # per position read
        positions = weight_macs / attention_macs
        sliding = sum(config.is_sliding(layer) for layer in range(layers))
        return cls(
            decode_positions=positions / DECODE_ATTENTION_RATIO,
            prefill_positions=positions / PREFILL_ATTENTION_RATIO,
            window=config.sliding_window if sliding else None,
            sliding_share=sliding / layers,
        )

    def decode(self, position: int) -> float:
        """The work of a decode token at `position` (it reads the keys and values of every position
        before it): its pass through the weights or its attention, whichever is larger."""
        if math.isinf(self.decode_positions):
            return 1.0
        return max(1.0, self._read(position, 1) / self.decode_positions)

    def prefill(self, start: int, tokens: int) -> float:
        """The work of prefilling `tokens` tokens at positions start .. start + tokens - 1."""
        if tokens <= 0:
            return 0.0
        if math.isinf(self.prefill_positions):
            return float(tokens)
        return tokens + self._read(start, tokens) / self.prefill_positions

    def _read(self, start: int, tokens: int) -> float:
        """The positions that tokens at start .. start + tokens - 1 read, summed, every layer counted by
        its share (a sliding layer reads at most its window)."""
        read = _positions_read(start, tokens)
        if self.window is None or not self.sliding_share:
            return read
        windowed = _positions_read_within(start, tokens, self.window)
        return (1.0 - self.sliding_share) * read + self.sliding_share * windowed


#: Work counted as tokens alone: what an engine that does not know its model's shape reports.
TOKENS_ONLY = WorkCost(math.inf, math.inf)


def _positions_read(start: int, tokens: int) -> float:
    """Σ p for p in [start, start + tokens): the positions the tokens' attention reads, all of them."""
    return tokens * start + tokens * (tokens - 1) / 2


def _positions_read_within(start: int, tokens: int, window: int) -> float:
    """Σ min(p, window) for p in [start, start + tokens)."""
    end = start + tokens
    below = max(0, min(end, window) - start)  # positions under the window read all before them
    return _positions_read(start, below) + (tokens - below) * window
