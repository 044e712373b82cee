"""Request starts per app are bounded before the body is read, and a client that has left is never
admitted.

Reproduction (issue 20, benchmarks/abuse.py): a disconnect storm, one app with a valid key opening ~57
streams a second and dropping each after its first chunk, cost a calm app 6.64x its p95 stream time,
while the engine computed under two tokens per dropped stream: nothing bounded how many requests a
valid key could start, and each cost its connection, key lookup, body, admission and audit rows.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from llmasos.api.app import create_app
from llmasos.api.auth import write_refusal_summaries
from llmasos.api.request_rate import RequestRateLimiter, RequestRatePolicy
from llmasos.errors import QuotaExceededError
from llmasos.security.apps import App
from llmasos.security.audit import AuditLog
from tests.api.test_admission_http import _raw_request
from tests.helpers.cli import run_cli

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_requests_start_at_the_rate():
    clock = _Clock()
    limiter = RequestRateLimiter(RequestRatePolicy(per_minute=60, burst=3), clock=clock)
    app = App("storm")
    for _ in range(3):
        limiter.take(app)
    with pytest.raises(QuotaExceededError) as refused:
        limiter.take(app)
    assert refused.value.retry_after == pytest.approx(1.0)  # one a second refills the next one
    assert "60 requests a minute" in refused.value.message
    clock.now = 1.0
    limiter.take(app)  # refilled
    with pytest.raises(QuotaExceededError):
        limiter.take(app)
    limiter.take(App("calm"))  # other apps have buckets of their own


def test_an_apps_own_rate_overrides_the_servers_and_zero_means_none():
    clock = _Clock()
    limiter = RequestRateLimiter(RequestRatePolicy(per_minute=0), clock=clock)
    for _ in range(1000):
        limiter.take(App("free"))  # no server default and no rate of its own: unlimited
    limited = App("limited", requests_per_minute=120, request_burst=2)
    assert limiter.rates(limited) == (120, 2)
    limiter.take(limited)
    limiter.take(limited)
    with pytest.raises(QuotaExceededError):
        limiter.take(limited)
    server_default = RequestRateLimiter(RequestRatePolicy(per_minute=600), clock=clock)
    assert server_default.rates(App("plain")) == (600, 10)  # burst: a second's worth
    assert server_default.rates(App("own", requests_per_minute=6000, request_burst=50)) == (6000, 50)


def test_a_key_of_an_app_out_of_requests_is_refused_without_a_lookup():
    clock = _Clock()
    limiter = RequestRateLimiter(RequestRatePolicy(per_minute=60, burst=1), clock=clock)
    digest = b"digest-of-a-key"
    limiter.refuse_key_if_empty(digest)  # never seen: looked up as usual
    limiter.take(App("storm"), digest)
    with pytest.raises(QuotaExceededError):
        limiter.refuse_key_if_empty(digest)
    clock.now = 1.0
    limiter.refuse_key_if_empty(digest)  # refilled: its key is checked again


def test_state_is_bounded():
    limiter = RequestRateLimiter(RequestRatePolicy(per_minute=60, burst=1, max_apps=8))
    for i in range(100):
        limiter.take(App(f"app{i}"), f"key{i}".encode())
    assert len(limiter._buckets) <= 8 and len(limiter._key_apps) <= 8


def test_refusals_are_audited_in_aggregate(tiny_server):
    app = App("storm", requests_per_minute=60, request_burst=1)
    limiter = RequestRateLimiter()
    limiter.take(app)
    for _ in range(25):
        with pytest.raises(QuotaExceededError):
            limiter.take(app)
    assert write_refusal_summaries(limiter, tiny_server.syscalls) == 0  # the window is still open
    assert write_refusal_summaries(limiter, tiny_server.syscalls, everything=True) == 1
    tiny_server.syscalls.audit.flush()
    (row,) = [r for r in AuditLog().query(app="storm") if r["call"] == "http.request_rate"]
    assert row["outcome"] == "denied" and row["reason"].startswith("25 requests refused")


def test_an_app_past_its_rate_is_refused_429_before_its_body_is_read(tiny_server):
    key = tiny_server.new_app("storm")
    admin = tiny_server.client()
    # One a minute: the bucket does not refill between requests however slow the machine is.
    patched = admin.patch("/os/apps/storm", json={"requests_per_minute": 1, "request_burst": 3})
    assert patched.status_code == 200, patched.text
    storm = tiny_server.client(key)
    assert [storm.post("/v1/chat/completions", json=CHAT).status_code for _ in range(3)] == [200] * 3
    refused = storm.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "requests a minute" in refused.json()["error"]["message"]
    # A body declared but never sent: answered at once (a server that read it would wait for it).
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: 100000"
    )
    assert _raw_request(tiny_server.url, head, b'{"model": ').startswith(b"HTTP/1.1 429")
    assert admin.get("/os/ps").status_code == 200  # other apps are not limited with it
    assert not [r for r in AuditLog().query(app="storm") if r["call"] == "http.request_rate"]


async def _call_and_leave(app, key: str, body: dict) -> list[dict]:
    """Call the ASGI `app` as a client that sends its whole request and then closes the connection."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_left_before_admission_is_never_admitted(tiny_server, stream):
    key = tiny_server.new_app("gone")
    app = create_app(tiny_server.syscalls, manage_kernel=False)  # the live server's kernel runs it
    sent = asyncio.run(_call_and_leave(app, key, {**CHAT, "stream": stream}))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 409 and json.loads(body)["error"]["type"] == "client_disconnected"
    gone = tiny_server.syscalls.apps.get("gone")
    assert tiny_server.syscalls.ps(gone, include_finished=True) == []  # no process, so no prefill


def test_apps_create_sets_the_request_rate_the_server_applies(tiny_server, monkeypatch, capsys):
    code, out, _ = run_cli(
        monkeypatch, capsys, "apps", "create", "paced", "--requests-per-minute", "1", "--request-burst", "2"
    )
    assert code == 0
    paced = tiny_server.client(out.strip())
    assert [paced.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]
    code, out, _ = run_cli(monkeypatch, capsys, "apps", "show", "paced", "--json")
    assert (json.loads(out)["requests_per_minute"], json.loads(out)["request_burst"]) == (1, 2)
    code, _, err = run_cli(monkeypatch, capsys, "apps", "create", "bad", "--requests-per-minute", "-1")
    assert code != 0 and "requests_per_minute" in err.replace("-", "_")
