"""The official `openai` package against a real server, unchanged."""

from __future__ import annotations

import openai


def test_models_list_and_a_greedy_chat_stream_the_same_text(compat_server):
    key = compat_server.new_app_key("compat-openai")
    client = openai.OpenAI(base_url=compat_server.openai_url, api_key=key, max_retries=0)
    assert "smollm2-135m-instruct" in {model.id for model in client.models.list()}
    ask = {"model": "default", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12}
    whole = client.chat.completions.create(**ask, temperature=0)
    deltas = client.chat.completions.create(**ask, temperature=0, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in deltas if chunk.choices)
    assert whole.choices[0].message.content
    assert streamed == whole.choices[0].message.content
    assert 0 < whole.usage.completion_tokens <= 12
