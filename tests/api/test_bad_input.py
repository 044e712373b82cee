"""A client's mistake is a clear 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

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
    ],
)
def test_bad_chat_bodies(tiny_server, body, status, says):
    r = tiny_server.client().post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert says in error["message"] and error["type"]


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
