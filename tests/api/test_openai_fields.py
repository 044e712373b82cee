"""Every OpenAI field the server accepts does something or is refused (issue 22, item 3), over HTTP
on the tiny random model: penalties, logit_bias, logprobs (chat and completions, streamed and not),
echo, suffix, nulls, image parts."""

from __future__ import annotations

import json

import httpx
import pytest

from llmasos.api.logprobs import token_bytes, token_text

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
COMPLETION = {"model": "tiny", "prompt": "The list", "max_tokens": 4, "temperature": 0}

BAD_BODIES = [
    ("/v1/chat/completions", {**CHAT, "presence_penalty": 5}, 422, "presence_penalty"),
    ("/v1/chat/completions", {**CHAT, "logit_bias": {"abc": 1}}, 422, "logit_bias"),
    ("/v1/chat/completions", {**CHAT, "logit_bias": {"5": "x"}}, 422, "logit_bias"),
    ("/v1/chat/completions", {**CHAT, "logit_bias": {"5": 101}}, 422, "logit_bias"),
    ("/v1/chat/completions", {**CHAT, "logit_bias": {"99999999": 1}}, 400, "logit_bias"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 21}, 422, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, 400, "top_logprobs needs logprobs"),
    ("/v1/chat/completions", {**CHAT, "logprobs": 3}, 422, "logprobs"),
    ("/v1/completions", {**COMPLETION, "logprobs": 21}, 422, "logprobs"),
    ("/v1/completions", {**COMPLETION, "echo": True, "logprobs": 1}, 400, "echo"),
    ("/v1/completions", {**COMPLETION, "suffix": "end"}, 400, "fill-in-the-middle"),
    (
        "/v1/chat/completions",
        {
            **CHAT,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ],
        },
        400,
        "messages.0.content.1: 'image_url' parts need a model with vision",
    ),
]


def post(server, path: str, body: dict) -> httpx.Response:
    return server.client().post(path, json=body)


def test_bad_fields_are_refused_naming_the_field(tiny_server):
    for path, body, status, says in BAD_BODIES:
        r = post(tiny_server, path, body)
        assert r.status_code == status, (body, r.text)
        assert says in r.json()["error"]["message"], (body, r.text)


def test_nulls_mean_not_given(tiny_server):
    nulls = {
        "stream": None,
        "stop": None,
        "n": None,
        "seed": None,
        "logprobs": None,
        "top_logprobs": None,
        "logit_bias": None,
        "presence_penalty": None,
        "stream_options": None,
        "user": None,
    }
    r = post(tiny_server, "/v1/chat/completions", {**CHAT, **nulls})
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 1 and r.json()["choices"][0]["logprobs"] is None
    r = post(tiny_server, "/v1/completions", {**COMPLETION, "stream": None, "echo": None, "suffix": None})
    assert r.status_code == 200, r.text


def test_logit_bias_forces_and_bans_tokens(tiny_server):
    plain = post(tiny_server, "/v1/chat/completions", {**CHAT, "logprobs": True}).json()
    tokenizer = tiny_server.engine().tokenizer
    first = plain["choices"][0]["logprobs"]["content"][0]["token"]
    first_bytes = bytes(plain["choices"][0]["logprobs"]["content"][0]["bytes"])
    first_id = next(i for i in range(tokenizer.vocab_size) if token_bytes(tokenizer, i) == first_bytes)
    banned = post(
        tiny_server, "/v1/chat/completions", {**CHAT, "logprobs": True, "logit_bias": {str(first_id): -100}}
    ).json()
    assert banned["choices"][0]["logprobs"]["content"][0]["token"] != first
    forced = tokenizer.encode(" the", add_special_tokens=False)[-1]
    body = {**CHAT, "max_tokens": 3, "logit_bias": {str(forced): 100}, "temperature": 1.0, "seed": 3}
    reply = post(tiny_server, "/v1/chat/completions", {**body, "logprobs": True}).json()
    assert [t["token"] for t in reply["choices"][0]["logprobs"]["content"]] == [token_text(tokenizer, forced)] * 3


def test_penalties_change_a_greedy_answer(tiny_server):
    # The tiny model repeats itself greedily; a frequency penalty makes it vary.
    body = {**COMPLETION, "max_tokens": 12}
    plain = post(tiny_server, "/v1/completions", body).json()["choices"][0]["text"]
    penalized = post(tiny_server, "/v1/completions", {**body, "frequency_penalty": 2}).json()
    assert penalized["choices"][0]["text"] != plain
    presence = post(tiny_server, "/v1/completions", {**body, "presence_penalty": 2}).json()
    assert presence["choices"][0]["text"] != plain


def test_chat_logprobs_have_openais_shape_streamed_and_not(tiny_server):
    body = {**CHAT, "logprobs": True, "top_logprobs": 3}
    reply = post(tiny_server, "/v1/chat/completions", body).json()
    choice = reply["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == reply["usage"]["completion_tokens"] == 4
    text = b"".join(bytes(item["bytes"]) for item in content)
    assert text.decode("utf-8", errors="replace") == choice["message"]["content"]
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}
        assert bytes(item["bytes"]).decode("utf-8", "backslashreplace") == item["token"]
        assert item["logprob"] <= 0
        assert len(item["top_logprobs"]) == 3
        assert item["top_logprobs"][0]["token"] == item["token"]
        assert item["top_logprobs"][0]["logprob"] == pytest.approx(item["logprob"])
    with tiny_server.client().stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    streamed = [
        item
        for c in chunks
        for ch in c["choices"]
        if ch.get("logprobs")
        for item in ch["logprobs"]["content"]
    ]
    assert [i["token"] for i in streamed] == [i["token"] for i in content]
    assert [i["logprob"] for i in streamed] == pytest.approx([i["logprob"] for i in content])


def test_completion_logprobs_legacy_shape_and_echo(tiny_server):
    reply = post(tiny_server, "/v1/completions", {**COMPLETION, "logprobs": 2}).json()
    choice = reply["choices"][0]
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["text_offset"]) == 4
    assert len(logprobs["token_logprobs"]) == 4 and all(lp <= 0 for lp in logprobs["token_logprobs"])
    assert logprobs["text_offset"][0] == 0
    assert all(
        len(top) >= 2 and token in top for token, top in zip(logprobs["tokens"], logprobs["top_logprobs"])
    )
    echoed = post(tiny_server, "/v1/completions", {**COMPLETION, "echo": True}).json()["choices"][0]["text"]
    assert echoed == COMPLETION["prompt"] + choice["text"]
    with tiny_server.client().stream(
        "POST", "/v1/completions", json={**COMPLETION, "echo": True, "stream": True}
    ) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == echoed
