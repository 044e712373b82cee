"""The work a step reports for its tokens (engine/work_cost.py): a token's pass through the weights,
and its attention's reads by position."""

from __future__ import annotations

import math

import pytest

from llmasos.engine.work_cost import TOKENS_ONLY, WorkCost
from llmasos.model.config import ModelConfig

SMOLLM2 = ModelConfig("llama", 49152, 576, 1536, 30, 9, 3, 64, tie_word_embeddings=True)
QWEN_1_5B = ModelConfig("qwen2", 151936, 1536, 8960, 28, 12, 2, 128, attention_bias=True)


def test_a_decode_token_costs_its_pass_through_the_weights_or_its_attention_whichever_is_larger() -> None:
    cost = WorkCost(decode_positions=200.0, prefill_positions=800.0)
    assert cost.decode(0) == cost.decode(30) == cost.decode(200) == 1.0
    assert cost.decode(400) == pytest.approx(2.0)
    assert cost.decode(2000) == pytest.approx(10.0)


def test_a_prefill_chunk_costs_its_tokens_plus_every_position_they_read() -> None:
    cost = WorkCost(decode_positions=200.0, prefill_positions=800.0)
    assert cost.prefill(0, 0) == 0.0
    assert cost.prefill(0, 1) == 1.0  # the first token reads nothing before it
    assert cost.prefill(0, 100) == pytest.approx(100 + sum(range(100)) / 800)
    whole = cost.prefill(0, 96)
    assert cost.prefill(0, 32) + cost.prefill(32, 64) == pytest.approx(whole)  # chunks add up


def test_a_sliding_window_layer_reads_at_most_its_window() -> None:
    full = WorkCost(decode_positions=100.0, prefill_positions=100.0)
    half = WorkCost(decode_positions=100.0, prefill_positions=100.0, window=512, sliding_share=0.5)
    assert half.decode(400) == full.decode(400)  # within the window both read it all
    assert half.decode(4000) == pytest.approx((0.5 * 4000 + 0.5 * 512) / 100)
    assert half.prefill(0, 1024) == pytest.approx(
        1024 + (0.5 * sum(range(1024)) + 0.5 * (sum(range(512)) + 512 * 512)) / 100
    )


def test_the_figures_come_from_the_models_shape() -> None:
    small, large = WorkCost.for_model(SMOLLM2), WorkCost.for_model(QWEN_1_5B)
    # The measured figure on SmolLM2 (benchmarks/context_cost.py): a decode token's attention cost a
    # pass through the weights every ~235 positions; a prefill token's about four times as many.
    assert 200 < small.decode_positions < 270
    assert 3.5 < small.prefill_positions / small.decode_positions < 4.5
    # A model with far more weights per position of KV read pays for context far later.
    assert large.decode_positions > 3 * small.decode_positions
    assert small.window is None and small.decode(2048) == pytest.approx(2048 / small.decode_positions)


def test_counting_tokens_alone_is_the_fallback() -> None:
    assert TOKENS_ONLY.decode(100_000) == 1.0 and TOKENS_ONLY.prefill(5000, 10) == 10.0
    assert math.isinf(TOKENS_ONLY.decode_positions)
    with pytest.raises(ValueError, match="decode_positions"):
        WorkCost(decode_positions=0.0, prefill_positions=1.0)
