"""Fixtures of the CLI tests: the tiny model in the library, and what an engine of the test's own answers."""

from __future__ import annotations

import pytest

from llmasos.config import EngineConfig
from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.library import ModelStore


@pytest.fixture
def tiny(tiny_gguf) -> str:
    ModelStore().pull(str(tiny_gguf), name="tiny", progress=False)
    return "tiny"


@pytest.fixture(scope="module")
def reference(tiny_loaded):
    """What the engine itself answers: greedy text for chat messages or a raw prompt."""
    engine = LLMEngine(tiny_loaded, EngineConfig(block_size=4, kv_cache_bytes=1 << 20))

    def answer(
        prompt: str | list[dict], max_tokens: int, temperature: float = 0, **params
    ) -> tuple[str, int]:
        """(text, prompt length) for a raw prompt (str) or chat messages (list)."""
        if isinstance(prompt, str):
            ids = engine.tokenizer.encode(prompt)
        else:
            ids = engine.tokenizer.encode_chat(prompt)
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, **params)
        return "".join(o.text for o in engine.stream(ids, params)), len(ids)

    return answer
