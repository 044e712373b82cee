"""Keys name apps; capabilities and priorities hold through HTTP; every call is audited."""

from __future__ import annotations

import os
import stat

import httpx

from llmasos.security.admin import admin_key_path
from llmasos.security.audit import AuditLog

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def test_requests_need_a_valid_key(tiny_server):
    for headers in ({}, {"Authorization": "Bearer lmos-nope"}, {"Authorization": "Basic abc"}):
        r = httpx.post(tiny_server.url + "/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(tiny_server.url + "/healthz").json()["status"] == "ok"  # liveness needs no key


def test_admin_key_file_is_private_and_keys_are_stored_hashed(tiny_server, llmasos_home):
    path = admin_key_path()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == tiny_server.admin_key
    raw = (llmasos_home / "state.db").read_bytes() + (llmasos_home / "state.db-wal").read_bytes()
    assert tiny_server.admin_key.encode() not in raw


def test_app_created_over_http_gets_a_working_key_once(tiny_server):
    admin = tiny_server.client()
    r = admin.post("/os/apps", json={"name": "reporter", "priority": "batch", "capabilities": ["model:tiny"]})
    assert r.status_code == 201
    key = r.json()["api_key"]
    app = tiny_server.client(key)
    assert app.post("/v1/chat/completions", json=CHAT).status_code == 200
    shown = admin.get("/os/apps/reporter").json()
    assert "api_key" not in shown and shown["keys"][0].endswith("…") and key not in str(shown)
    # a non-admin cannot manage apps
    assert app.post("/os/apps", json={"name": "x"}).status_code == 403
    assert app.get("/os/apps/admin").status_code == 403


def test_missing_capability_is_403_and_audited_as_denied(tiny_server):
    key = tiny_server.new_app("narrow", capabilities=("model:other-*",))
    r = tiny_server.client(key).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 403
    assert "model:tiny" in r.json()["error"]["message"]
    (row,) = AuditLog().query(app="narrow")
    assert row["call"] == "chat" and row["outcome"] == "denied" and not row["allowed"]
    assert "may not use model 'tiny'" in row["reason"]


def test_a_request_may_lower_its_priority_but_not_raise_it(tiny_server):
    key = tiny_server.new_app("worker", priority="normal")
    client = tiny_server.client(key)
    assert client.post("/v1/chat/completions", json={**CHAT, "priority": "batch"}).status_code == 200
    r = client.post("/v1/chat/completions", json={**CHAT, "priority": "realtime"})
    assert r.status_code == 403


def test_audit_rows_record_tokens_and_keep_content_only_on_opt_in(tiny_server):
    quiet = tiny_server.client(tiny_server.new_app("quiet"))
    loud = tiny_server.client(tiny_server.new_app("loud", audit_content=True))
    for client in (quiet, loud):
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    (q, q_start) = AuditLog().query(app="quiet")
    (lo, _) = AuditLog().query(app="loud")
    assert q["outcome"] == lo["outcome"] == "finished"
    assert q_start["outcome"] == "started" and q["opens"] == q_start["id"] and not q_start["unfinished"]
    assert q_start["pid"] == q["pid"] and q_start["prompt"] is None
    assert q["tokens_out"] == lo["tokens_out"] == 2 and q["tokens_in"] > 0
    assert q["prompt"] is None and q["output"] is None
    assert "hi" in lo["prompt"] and isinstance(lo["output"], str)
    assert AuditLog().verify().intact


def test_token_quota_answers_429_with_retry_after(tiny_server):
    # Each request asks for >= 10 prompt + 15 output tokens; after one, the next would pass 30 a minute.
    key = tiny_server.new_app("metered", tokens_per_minute=30)
    client = tiny_server.client(key)
    body = {"model": "tiny", "prompt": "a b c d e f g h i j", "max_tokens": 15}
    assert client.post("/v1/completions", json=body).status_code == 200
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert AuditLog().query(app="metered", outcome="denied")


def test_anonymous_access_only_when_the_operator_allows_it(anonymous_server):
    r = httpx.post(anonymous_server.url + "/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    (row, start) = AuditLog().query(app="anonymous")
    assert row["outcome"] == "finished" and start["outcome"] == "started"


def _rows(call: str) -> list[dict]:
    return [r for r in AuditLog().query(limit=1000) if r["call"] == call]


def test_a_request_that_ends_in_a_500_is_audited(tiny_server, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(tiny_server.syscalls, "describe", broken)
    tiny_server.client().post("/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 1})
    r = tiny_server.client().get("/os/ps")
    assert r.status_code == 500
    (row,) = _rows("http GET /os/ps")
    assert row["app"] == "admin" and row["outcome"] == "error"
    assert row["reason"] == "internal error: ZeroDivisionError"


def test_every_failed_request_of_a_known_caller_is_audited_once(tiny_server):
    client = tiny_server.client()
    assert client.post("/v1/completions", json={"model": "tiny", "prompt": 5}).status_code == 422
    (row,) = _rows("http POST /v1/completions")
    assert row["app"] == "admin" and row["outcome"] == "error" and "prompt" in row["reason"]
    assert client.get("/os/tasks/999").status_code == 404  # written by the status system call
    assert len([r for r in AuditLog().query(limit=1000) if "999" in (r["target"] + r["reason"])]) == 1
    before = len(AuditLog().query(limit=10_000))
    # No key: the authentication layer's business (401 before any route is matched). It audits the
    # first failures of an address on their own, then locks the address out (429) and summarizes the
    # rest, so 30 of them add at most 10 rows.
    for i in range(30):
        assert httpx.get(f"{tiny_server.url}/nope-{i}").status_code in (401, 429)
    assert len(AuditLog().query(limit=10_000)) - before <= 10
