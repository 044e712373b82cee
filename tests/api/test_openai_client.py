"""The official `openai` package against a real uvicorn server: chat, streaming, completions, errors."""

from __future__ import annotations

import openai
import pytest


@pytest.fixture
def client(tiny_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key=tiny_server.admin_key, max_retries=0)


def test_chat_completion_non_streaming(client, tiny_server):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=6, temperature=0
    )
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_streaming_equals_non_streaming_for_the_same_seed(client):
    args = dict(
        model="tiny", messages=[{"role": "user", "content": "count"}], max_tokens=8, seed=7, temperature=1.0
    )
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8  # the usage chunk comes last


def test_n_choices_are_independent_processes(client, tiny_server):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=4, n=3, seed=1, temperature=1.0
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.completion_tokens == 12
    assert len({c.message.content for c in reply.choices}) > 1  # different seeds per choice


def test_completions_with_a_list_of_prompts(client):
    reply = client.completions.create(model="tiny", prompt=["a b", "c d"], max_tokens=3, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.completion_tokens == 6
    streamed = client.completions.create(model="tiny", prompt="a b", max_tokens=3, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text


def test_stop_string_ends_the_output_before_it(client):
    free = client.completions.create(model="tiny", prompt="a", max_tokens=12, temperature=0).choices[0].text
    # A visible character that first appears after the start: the stopped output is what precedes it.
    firsts = [
        i for i, ch in enumerate(free) if i >= 1 and ch.strip() and ch != "\ufffd" and free.index(ch) == i
    ]
    assert firsts, f"the tiny model's greedy output {free!r} has no character to stop on"
    cut = free[firsts[len(firsts) // 2]]
    stopped = client.completions.create(model="tiny", prompt="a", max_tokens=12, temperature=0, stop=[cut])
    assert stopped.choices[0].text == free[: free.index(cut)]
    assert stopped.choices[0].finish_reason == "stop"


def test_models_lists_the_library(client):
    ids = [m.id for m in client.models.list()]
    assert "tiny" in ids


def test_errors_arrive_as_the_openai_exception_types(client, tiny_server):
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    bad = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="lmos-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x " * 400}])
    assert info.value.status_code == 413
