"""Dropping a stream cancels its process and frees its KV; /metrics and /os/ps report the kernel."""

from __future__ import annotations

import json
import time

import httpx


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _long_stream(max_tokens: int) -> dict:
    """A streamed chat that runs long enough for the client to hang up in the middle of it."""
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": "go on"}],
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": 1.0,
    }


def test_disconnect_mid_stream_cancels_and_frees_kv(tiny_server):
    body = _long_stream(max_tokens=200)
    headers = {"Authorization": f"Bearer {tiny_server.admin_key}"}
    with httpx.stream("POST", tiny_server.url + "/v1/chat/completions", json=body, headers=headers) as r:
        pid = int(r.headers["x-llmasos-pids"])
        lines = r.iter_lines()
        for line in lines:  # read until the first text arrives, then hang up
            if line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                break
    syscalls = tiny_server.syscalls
    process = syscalls.kernel.table[pid]
    assert _wait_for(lambda: process.is_terminal)
    assert process.state.value == "cancelled" and "disconnected" in process.reason
    assert process.tokens_out < 200
    engine = tiny_server.engine()
    assert _wait_for(lambda: str(pid) not in engine.requests)
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks  # every block returned (cached ones are reusable)


def test_ps_shows_live_processes_with_their_fields(tiny_server):
    client = tiny_server.client()
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 3})
    pid = int(r.headers["x-llmasos-pids"])
    (p,) = [p for p in client.get("/os/ps").json()["processes"] if p["pid"] == pid]
    assert p["app"] == "admin" and p["model"] == "tiny" and p["state"] == "finished"
    assert p["tokens_out"] == 3 and p["priority"] == "interactive"
    for field in ("tokens_in", "waited_seconds", "running_seconds", "reason", "preemptions"):
        assert field in p
    other = tiny_server.client(tiny_server.new_app("other"))
    assert all(q["app"] == "other" for q in other.get("/os/ps").json()["processes"])  # only its own


def test_metrics_report_per_app_and_model_figures(tiny_server):
    client = tiny_server.client()
    client.post("/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 4})
    client.post("/v1/completions", json={"model": "nope", "prompt": "a"})
    text = client.get("/metrics").text
    assert 'llmasos_requests_total{app="admin",call="generate",outcome="finished"} 1.0' in text
    assert 'llmasos_errors_total{app="admin",type="model_not_found"} 1.0' in text
    assert 'llmasos_app_tokens_generated_total{app="admin"} 4.0' in text
    assert 'llmasos_kv_blocks{model="tiny",state="free"}' in text
    assert "llmasos_memory_budget_bytes" in text
    assert tiny_server.client(tiny_server.new_app("plain")).get("/metrics").status_code == 403


def test_the_openapi_spec_lists_the_contract_routes(tiny_server):
    spec = json.loads(httpx.get(tiny_server.url + "/openapi.json").text)
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/os/ps",
        "/os/apps",
        "/os/apps/{name}",
        "/os/tasks/{pid}",
        "/os/services/{name}",
        "/os/models",
        "/healthz",
        "/metrics",
    ):
        assert path in spec["paths"], path


def test_a_dropped_stream_is_audited_by_its_start_and_end_rows_alone(tiny_server):
    """The server's cancellation for a client that left is no call of the app's: the process's end
    row records it (cancelled, and why); no `cancel` row of its own (a third of a storm's rows)."""
    key = tiny_server.new_app("dropper")
    body = _long_stream(max_tokens=900)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", tiny_server.url + "/v1/chat/completions", json=body, headers=headers) as r:
        pid = int(r.headers["x-llmasos-pids"])
        next(line for line in r.iter_lines() if line.startswith("data: "))
    process = tiny_server.syscalls.kernel.table[pid]
    assert _wait_for(lambda: process.is_terminal)
    assert process.state.value == "cancelled"
    audit = tiny_server.syscalls.audit
    assert audit.flush(10)
    rows = sorted(audit.query(app="dropper"), key=lambda row: row["id"])
    assert [(row["call"], row["outcome"]) for row in rows] == [("chat", "started"), ("chat", "cancelled")]
    start, end = rows
    assert start["pid"] == end["pid"] == pid and end["opens"] == start["id"]
    assert "disconnected" in end["reason"]
    assert audit.verify().intact
