"""What a step holds besides the weights: a prompt's chunk size and the prefix cache's idle allowance.

Both bound issue 23's peak RSS. A smaller prefill chunk holds smaller activations, and may do so only
because a token's numbers do not depend on the chunk it is computed in; the prefix cache keeps a number
of tokens idle, whatever a token's KV costs in bytes.
"""

from __future__ import annotations

from dataclasses import replace

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.model_runner import idle_cache_blocks
from llmasos.engine.sampling import SamplingParams
from tests.helpers.engines import engine_with, random_prompts


def _first_token_logprobs(engine: LLMEngine, prompt: list[int]) -> tuple[list[int], list]:
    params = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True, logprobs=5)
    engine.add("r", prompt, params)
    tokens, logprobs = [], []
    while engine.has_unfinished_requests:
        for output in engine.step():
            tokens += output.token_ids
            logprobs += output.logprobs or []
    return tokens, logprobs


def test_a_prompt_computed_in_small_chunks_gives_the_numbers_of_one_step(tiny_loaded) -> None:
    """The chunk size bounds a prefill step's activations and changes nothing else: the same tokens
    and bitwise the same logprobs as the whole prompt in one step."""
    prompt = random_prompts([200], seed=11)[0]
    whole = engine_with(tiny_loaded, max_num_batched_tokens=256)
    chunked = engine_with(tiny_loaded, max_num_batched_tokens=48)
    tokens, logprobs = _first_token_logprobs(whole, prompt)
    assert _first_token_logprobs(chunked, prompt) == (tokens, logprobs)
    assert len(logprobs) == 4 and logprobs[0] is not None


def test_the_prefix_caches_allowance_is_tokens_whatever_a_tokens_kv_costs() -> None:
    config = EngineConfig(block_size=16, prefix_cache_tokens=1000)
    assert idle_cache_blocks(config, bytes_per_block=16 * 23_040) == 63  # SmolLM2's KV: 1,008 tokens
    assert idle_cache_blocks(config, bytes_per_block=16 * 131_072) == 63  # an 8B model's: the same
    by_bytes = replace(config, prefix_cache_bytes=10 * 16 * 23_040)  # config.toml's byte form wins
    assert idle_cache_blocks(by_bytes, bytes_per_block=16 * 23_040) == 10
    assert idle_cache_blocks(replace(config, prefix_cache_tokens=0), bytes_per_block=1) == 0


def test_an_engine_keeps_its_configured_tokens_idle(tiny_loaded) -> None:
    engine = engine_with(tiny_loaded, num_blocks=64, block_size=4, prefix_cache_tokens=40)
    assert engine.block_manager.max_idle_cached_blocks == 10
    params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
    for prompt in random_prompts([24] * 8, seed=5):  # 6 named blocks each, freed at the end
        engine.generate([prompt], params)
    # The allowance and what one request frees beyond it: never the 8 requests' 48 named blocks.
    assert engine.block_manager.num_touched_blocks <= 10 + 7 + 1
    assert engine.block_manager.num_cached_blocks >= 10
