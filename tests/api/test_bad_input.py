"""A client's mistake is a clear 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

import json

import pytest

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({**CHAT, "max_tokens": "10"}, 422, "max_tokens"),
        ({**CHAT, "temperature": "hot"}, 422, "temperature"),
        ({**CHAT, "temperature": 3}, 422, "temperature"),
        ({**CHAT, "messages": []}, 422, "messages"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, 422, "role"),
        ({**CHAT, "messages": "hello"}, 422, "messages"),
        ({**CHAT, "n": 0}, 422, "n"),
        ({**CHAT, "stop": [""]}, 422, "stop"),
        ({**CHAT, "priority": "urgent"}, 422, "priority"),
        ({k: v for k, v in CHAT.items() if k != "model"}, 422, "model"),
        ({**CHAT, "model": "no-such-model"}, 404, "no-such-model"),
        ({**CHAT, "messages": [{"role": "user", "content": "word " * 300}]}, 413, "context window"),
        # Every number within the engine's ranges (a 2^70 seed once wedged every tick), every list bounded.
        ({**CHAT, "seed": 2**70}, 422, "seed"),
        ({**CHAT, "seed": -(2**64)}, 422, "seed"),
        ({**CHAT, "top_p": 0}, 422, "top_p"),
        ({**CHAT, "top_p": 1.5}, 422, "top_p"),
        ({**CHAT, "temperature": -0.1}, 422, "temperature"),
        ({**CHAT, "presence_penalty": 2.5}, 422, "presence_penalty"),
        ({**CHAT, "frequency_penalty": -3}, 422, "frequency_penalty"),
        ({**CHAT, "n": 9}, 422, "n"),
        ({**CHAT, "max_tokens": 0}, 422, "max_tokens"),
        ({**CHAT, "max_tokens": 10**7}, 422, "max_tokens"),
        ({**CHAT, "top_k": 10**9}, 422, "top_k"),
        ({**CHAT, "stop": ["x"] * 17}, 422, "stop"),
        ({**CHAT, "stop": "x" * 300}, 422, "stop"),
        ({**CHAT, "user": "u" * 1000}, 422, "user"),
        ({**CHAT, "messages": [{"role": "user", "content": "x"}] * 5000}, 422, "messages"),
        # Invalid Unicode is refused naming the field (it was a 500 from the tokenizer).
        ({**CHAT, "messages": [{"role": "user", "content": "a\ud800b"}]}, 400, "messages.0.content"),
        (
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            400,
            "messages.0.content.0.text",
        ),
        ({**CHAT, "stop": ["\ud800"]}, 400, "stop.0"),
    ],
)
def test_bad_chat_bodies(tiny_server, body, status, says):
    raw = json.dumps(body)  # not json=: httpx would refuse to encode a lone surrogate itself
    r = tiny_server.client().post(
        "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert says in error["message"] and error["type"]


def test_a_64_bit_seed_works(tiny_server):
    body = {**CHAT, "seed": 2**63 - 1, "n": 2, "temperature": 1.0}
    assert tiny_server.client().post("/v1/chat/completions", json=body).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/v1/completions", {"model": "tiny", "prompt": "a\ud800b", "max_tokens": 2}, "prompt"),
        ("/v1/completions", {"model": "tiny", "prompt": ["ok", "\ud800"], "max_tokens": 2}, "prompt.1"),
        ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "a\ud800b"}, "input"),
        ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ["ok", "\udc00"]}, "input.1"),
        ("/os/services/summarize", {"input": "a\ud800b", "model": "tiny"}, "input"),
        ("/os/services/classify", {"input": "x", "params": {"labels": ["\ud800"]}}, "params.labels.0"),
        ("/os/services/summarize", {"input": "x", "params": {"\ud800": 1}}, "a key in params"),
    ],
)
def test_invalid_unicode_is_400_naming_the_field_everywhere_text_enters(tiny_server, path, body, says):
    # The \ud800 escape is valid JSON, and Python's json reads it as a lone surrogate.
    raw = json.dumps(body)  # ASCII, with the \ud800 escape
    r = tiny_server.client().post(path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert says in message and "Unicode" in message


def test_deeply_nested_input_is_refused_naming_where(tiny_server):
    nested: object = "x"
    for _ in range(40):
        nested = {"a": nested}
    r = tiny_server.client().post("/os/services/summarize", json={"input": nested, "model": "tiny"})
    assert r.status_code == 400, r.text
    assert "nests deeper" in r.json()["error"]["message"] and "input.a.a" in r.json()["error"]["message"]
    r = tiny_server.client().post(
        "/v1/chat/completions",
        content=b"[" * 100_000 + b"]" * 100_000,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text


def test_unknown_fields_are_ignored_and_huge_max_tokens_is_clamped(tiny_server):
    body = {**CHAT, "max_tokens": 1_000_000, "logprobs": False, "presence_penalty": 0.5, "temperature": 0}
    r = tiny_server.client().post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    usage = r.json()["usage"]
    assert usage["total_tokens"] <= tiny_server.engine().context_length


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400),
        (b"", {"Content-Type": "application/json"}, 400),
        (b"model=tiny", {"Content-Type": "application/x-www-form-urlencoded"}, 400),
    ],
)
def test_malformed_bodies(tiny_server, content, headers, status):
    r = tiny_server.client().post("/v1/chat/completions", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert "JSON" in r.json()["error"]["message"]


def test_unknown_routes_and_tasks(tiny_server):
    client = tiny_server.client()
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/os/tasks/999").status_code == 404
    assert client.get("/os/tasks/abc").status_code == 422
    assert client.delete("/os/tasks/999").status_code == 404
    r = client.post("/v1/embeddings", json={"model": "tiny", "input": "x"})
    assert r.status_code == 404 and "embed" in r.json()["error"]["message"]


def test_cancelling_an_ended_process_is_a_conflict(tiny_server):
    client = tiny_server.client()
    r = client.post("/v1/chat/completions", json=CHAT)
    pid = int(r.headers["x-llmasos-pids"])
    assert client.get(f"/os/tasks/{pid}").json()["state"] == "finished"
    r = client.delete(f"/os/tasks/{pid}")
    assert r.status_code == 409 and "already ended" in r.json()["error"]["message"]


def test_a_model_over_the_memory_budget_is_503(tiny_gguf):
    from llmasos.config import EngineConfig
    from tests.api.conftest import run_server

    for server in run_server(
        tiny_gguf, "tiny", EngineConfig(block_size=4, kv_cache_bytes=2**20), memory_budget=2**16
    ):
        r = server.client().post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 503
        message = r.json()["error"]["message"]
        assert "memory budget" in message and "--memory-budget" in message


def test_a_damaged_model_file_is_503_not_500(tiny_server):
    from llmasos.library.store import ModelStore

    path = ModelStore().model_path("tiny")
    path.write_bytes(path.read_bytes()[:1000])  # truncated behind the library's back
    r = tiny_server.client().post("/v1/chat/completions", json={**CHAT, "model": "tiny"})
    assert r.status_code == 503  # the server loads models on first use, so this is the first load
    assert "could not be loaded" in r.json()["error"]["message"]
