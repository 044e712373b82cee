"""The clients users bring, unchanged, against a real `llmasos serve` on the real default model:
openai's logprobs, LlamaIndex's `OpenAILike`, litellm (`openai/` and `ollama_chat/`) and the `ollama`
package. Each check asserts what the client parsed.

Each client sends its app's key (litellm and `ollama` as an `Authorization` header), so the server
needs no `--anonymous-app`. Generations stay short: a few tokens at temperature 0.
"""

from __future__ import annotations

import math

import litellm
import ollama
import openai
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def key(compat_server) -> str:
    return compat_server.new_app_key("compat-basic")


# ---- openai: logprobs ------------------------------------------------------------------------


def _check_logprobs(content, top: int) -> None:
    assert content, "no logprobs came back"
    for item in content:
        assert item.logprob <= 0 and bytes(item.bytes).decode("utf-8", "backslashreplace") == item.token
        assert len(item.top_logprobs) == top
        assert [t.logprob for t in item.top_logprobs] == sorted(
            (t.logprob for t in item.top_logprobs), reverse=True
        )
        # temperature 0: the chosen token is the likeliest one
        assert item.top_logprobs[0].token == item.token
        assert math.isclose(item.top_logprobs[0].logprob, item.logprob, abs_tol=1e-5)


def test_openai_chat_logprobs_streamed_and_not(compat_server, key):
    client = openai.OpenAI(base_url=compat_server.openai_url, api_key=key, max_retries=0)
    ask = {"model": "default", "messages": QUESTION, "max_tokens": 6, "temperature": 0}
    reply = client.chat.completions.create(**ask, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    _check_logprobs(content, 3)
    assert len(content) == reply.usage.completion_tokens
    text = b"".join(bytes(item.bytes) for item in content).decode("utf-8", "replace")
    assert text == reply.choices[0].message.content
    chunks = list(client.chat.completions.create(**ask, logprobs=True, top_logprobs=3, stream=True))
    streamed = [
        item for c in chunks if c.choices and c.choices[0].logprobs for item in c.choices[0].logprobs.content
    ]
    _check_logprobs(streamed, 3)
    assert [i.token for i in streamed] == [i.token for i in content]
    plain = client.chat.completions.create(**ask)
    assert (
        plain.choices[0].logprobs is None
        and plain.choices[0].message.content == reply.choices[0].message.content
    )


# ---- LlamaIndex ------------------------------------------------------------------------------


def test_llamaindex_openai_like_complete_chat_and_stream(compat_server, key):
    llm = OpenAILike(
        model="default",
        api_base=compat_server.openai_url,
        api_key=key,
        is_chat_model=True,
        max_tokens=8,
        temperature=0,
        max_retries=0,
    )
    completed = llm.complete("Name a colour.")
    assert isinstance(completed.text, str) and completed.text
    chatted = llm.chat([ChatMessage(role="user", content="Name a colour.")])
    assert chatted.message.role == "assistant" and chatted.message.content == completed.text
    streamed = list(llm.stream_chat([ChatMessage(role="user", content="Name a colour.")]))
    assert "".join(r.delta or "" for r in streamed) == completed.text
    assert streamed[-1].message.content == completed.text
    assert "".join(r.delta or "" for r in llm.stream_complete("Name a colour.")) == completed.text


# ---- litellm ---------------------------------------------------------------------------------


def test_litellm_openai_provider(compat_server, key):
    reply = litellm.completion(
        model="openai/default",
        api_base=compat_server.openai_url,
        api_key=key,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 8
    chunks = litellm.completion(
        model="openai/default",
        api_base=compat_server.openai_url,
        api_key=key,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content


def test_litellm_ollama_chat_provider(compat_server, key):
    reply = litellm.completion(
        model="ollama_chat/default",
        api_base=compat_server.url,
        api_key=key,  # litellm sends it as `Authorization: Bearer ...`
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
    )
    text = reply.choices[0].message.content
    assert isinstance(text, str) and text
    assert 0 < reply.usage.completion_tokens <= 8
    openai_text = litellm.completion(
        model="openai/default",
        api_base=compat_server.openai_url,
        api_key=key,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
    )
    assert text == openai_text.choices[0].message.content  # one model, one greedy answer


# ---- the ollama package ----------------------------------------------------------------------


def test_ollama_package_list_show_chat_generate_embed_ps(compat_server, key):
    client = ollama.Client(host=compat_server.url, headers={"Authorization": f"Bearer {key}"})
    names = [m.model for m in client.list().models]
    assert f"{MODEL}:latest" in names or MODEL in names
    shown = client.show(MODEL)
    assert shown.details.family and "llama" in shown.details.family.lower()
    options = {"num_predict": 6, "temperature": 0}
    chat = client.chat(model=MODEL, messages=QUESTION, options=options)
    assert chat.message.role == "assistant" and chat.message.content
    assert chat.done and 0 < chat.eval_count <= 6
    parts = list(client.chat(model=MODEL, messages=QUESTION, options=options, stream=True))
    assert "".join(p.message.content for p in parts) == chat.message.content and parts[-1].done
    generated = client.generate(model=MODEL, prompt="Name a colour.", options=options)
    assert generated.response and generated.done
    embedded = client.embed(model="all-minilm-l6-v2", input=["a cat", "a kitten"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 384
    assert math.isclose(sum(x * x for x in embedded.embeddings[0]), 1.0, abs_tol=1e-4)
    running = [m.model for m in client.ps().models]
    assert any(MODEL in name for name in running)
