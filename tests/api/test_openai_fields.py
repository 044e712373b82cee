"""Every OpenAI field the server accepts does something or is refused (issue 22, item 3), over HTTP
on the tiny random model: penalties, logit_bias, logprobs (chat and completions, streamed and not),
echo, suffix, nulls, image parts."""

from __future__ import annotations

import json
import math

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
    ("/v1/completions", {**COMPLETION, "best_of": 3}, 400, "best_of"),
    ("/v1/chat/completions", {**CHAT, "modalities": ["text", "audio"]}, 400, "modalities"),
    ("/v1/chat/completions", {**CHAT, "audio": {"voice": "alloy", "format": "wav"}}, 400, "audio"),
    ("/v1/chat/completions", {**CHAT, "prediction": {"type": "content", "content": "x"}}, 400, "prediction"),
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
        "modalities": ["text"],
        "store": False,
        "metadata": {"k": "v"},
        "service_tier": "auto",
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
    assert [t["token"] for t in reply["choices"][0]["logprobs"]["content"]] == [
        token_text(tokenizer, forced)
    ] * 3


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
        len(top) >= 2 and token in top
        for token, top in zip(logprobs["tokens"], logprobs["top_logprobs"], strict=True)
    )
    echoed = post(tiny_server, "/v1/completions", {**COMPLETION, "echo": True}).json()["choices"][0]["text"]
    assert echoed == COMPLETION["prompt"] + choice["text"]
    with tiny_server.client().stream(
        "POST", "/v1/completions", json={**COMPLETION, "echo": True, "stream": True}
    ) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == echoed


def test_models_retrieve_one_and_404_in_openais_shape(tiny_server):
    client = tiny_server.client()
    assert client.get("/v1/models/tiny").json() == {
        **client.get("/v1/models/tiny").json(),
        "id": "tiny",
        "object": "model",
        "owned_by": "llmasos",
    }
    assert client.get("/v1/models/TINY").json()["id"] == "tiny"
    assert client.get("/v1/models/sentence-transformers/all-minilm-l6-v2").json()["id"] == "all-minilm-l6-v2"
    r = client.get("/v1/models/no-such-model")
    assert r.status_code == 404
    assert "no-such-model" in r.json()["error"]["message"] and r.json()["error"]["type"]
    narrow = tiny_server.new_app("narrow", capabilities=("model:other",))
    r = tiny_server.client(narrow).get("/v1/models/tiny")
    assert r.status_code == 404, r.text


def test_embeddings_dimensions_and_inputs_over_the_window(tiny_server):
    client = tiny_server.client()
    body = {"model": "all-minilm-l6-v2", "input": ["a cat on a mat", "stocks fell"]}
    full = client.post("/v1/embeddings", json=body).json()["data"]
    short = client.post("/v1/embeddings", json={**body, "dimensions": 64}).json()["data"]
    for whole, cut in zip(full, short, strict=True):
        head = whole["embedding"][:64]
        norm = math.sqrt(sum(x * x for x in head))
        assert len(cut["embedding"]) == 64
        assert cut["embedding"] == pytest.approx([x / norm for x in head], abs=1e-6)
    r = client.post("/v1/embeddings", json={**body, "dimensions": 385})
    assert r.status_code == 400 and "at most 384" in r.json()["error"]["message"]
    long = " ".join(["word"] * 2000)
    r = client.post("/v1/embeddings", json={**body, "input": ["short", long]})
    assert r.status_code == 413, r.text
    assert "input.1 has 2002 tokens" in r.json()["error"]["message"] and "256" in r.json()["error"]["message"]


@pytest.fixture
def cors_server(tiny_gguf):
    from llmasos.api.limits import HttpLimits
    from llmasos.config import EngineConfig
    from tests.api.conftest import run_server

    limits = HttpLimits(cors_origins=("http://localhost:3000",))
    yield from run_server(tiny_gguf, "tiny", EngineConfig(block_size=4, kv_cache_bytes=2**20), limits=limits)


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def test_cors_preflight_is_answered_for_allowed_origins_only(cors_server):
    raw = httpx.Client(base_url=cors_server.url)
    ok = raw.options("/v1/chat/completions", headers={"Origin": "http://localhost:3000", **PREFLIGHT})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in ok.headers["access-control-allow-methods"]
    other = raw.options("/v1/chat/completions", headers={"Origin": "http://evil.example", **PREFLIGHT})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    r = cors_server.client().get("/v1/models", headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_cors_is_off_by_default(tiny_server):
    r = httpx.Client(base_url=tiny_server.url).options(
        "/v1/chat/completions", headers={"Origin": "http://localhost:3000", **PREFLIGHT}
    )
    assert "access-control-allow-origin" not in r.headers


def test_stop_seed_and_n_do_what_openai_documents(tiny_server):
    body = {**COMPLETION, "max_tokens": 12, "temperature": 2.0, "repetition_penalty": 1.3, "seed": 11}
    first = post(tiny_server, "/v1/completions", body).json()["choices"][0]["text"]
    assert post(tiny_server, "/v1/completions", body).json()["choices"][0]["text"] == first
    other = post(tiny_server, "/v1/completions", {**body, "seed": 12}).json()["choices"][0]["text"]
    assert other != first
    stop = first[len(first) // 2 : len(first) // 2 + 2]
    stopped = post(tiny_server, "/v1/completions", {**body, "stop": [stop]}).json()["choices"][0]
    assert stopped["text"] == first[: first.index(stop)] and stopped["finish_reason"] == "stop"
    choices = post(tiny_server, "/v1/completions", {**body, "n": 3}).json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2] and choices[0]["text"] == first
    assert len({c["text"] for c in choices}) > 1


def test_cors_origins_are_checked_when_the_server_starts():
    from llmasos.api.cors import check_origins
    from llmasos.errors import InvalidRequestError

    assert check_origins(["http://localhost:3000", "*"]) == ("http://localhost:3000", "*")
    for bad in ("localhost:3000", "http://x/path", "ftp://x"):
        with pytest.raises(InvalidRequestError, match="scheme://host"):
            check_origins([bad])
