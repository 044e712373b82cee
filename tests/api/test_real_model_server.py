"""The official `openai` client against a server on the real default model."""

from __future__ import annotations

import openai
import pytest

from llmasos.config import EngineConfig
from tests.api.conftest import run_server

pytestmark = pytest.mark.real_model


@pytest.fixture
def real_server(default_gguf_path):
    yield from run_server(default_gguf_path, "smollm2-135m-instruct", EngineConfig(kv_cache_bytes=64 * 2**20))


def test_chat_answers_and_streams_the_same_text(real_server):
    client = openai.OpenAI(base_url=real_server.url + "/v1", api_key=real_server.admin_key, max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model="default", messages=messages, max_tokens=24, temperature=0)
    text = reply.choices[0].message.content
    assert "Paris" in text
    assert reply.model == "smollm2-135m-instruct"
    stream = client.chat.completions.create(
        model="default", messages=messages, max_tokens=24, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text
    done = client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert "Paris" in done.choices[0].text
