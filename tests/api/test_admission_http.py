"""The HTTP door admits before it works: key before body, a body limit while reading, trusted hosts,
bounded failed authentication, and metric labels that are route templates.

Reproductions (issue 20): eight parallel 30 MB bodies with no key were read and parsed (261 MB ->
1,973 MB) before each got its 401; 3,000 bad-key requests on distinct paths grew /metrics from 77 to
3,077 series and audit.db by 17 MB, at ~390 guesses a second; any Host header was accepted by a
server serving keyless requests.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from llmasos.api.auth_guard import FailedAuthGuard, FailedAuthPolicy
from llmasos.security.audit import AuditLog

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _raw_request(url: str, head: str, body_part: bytes, wait: float = 5.0) -> bytes:
    """Send a request's head and only part of its body, then read what the server answers."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body_part)
        answer = b""
        try:  # until the answer's head and its declared body are in
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_request_without_a_valid_key_is_refused_before_its_body_is_read(tiny_server):
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 31457280"
    )
    for auth in ("", "\r\nAuthorization: Bearer lmos-wrong"):
        answer = _raw_request(tiny_server.url, head + auth, b'{"model": "tiny", "messages": [')
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_a_declared_oversized_body_is_refused_at_once(tiny_server):
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {tiny_server.admin_key}\r\nContent-Length: 31457280"
    )
    answer = _raw_request(tiny_server.url, head, b'{"model": "tiny", "messages": [')
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"limit" in answer


def _closed_after_answer(url: str, head: str) -> tuple[bytes, bool]:
    """Send a head declaring a body and only its first bytes; the answer, and whether the server then
    closed the connection (rather than reading on, to discard the rest, as it used to: a 30 MB body
    refused at once still cost the server 30 MB of reading)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + b'{"model": "tiny", "messages": [')
        answer = sock.recv(65536)
        sock.settimeout(2)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            return answer, False
        except ConnectionResetError:
            pass
        return answer, True


def test_a_body_refused_before_it_is_read_closes_the_connection(tiny_server):
    start = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    for head, status in (
        (start + "Content-Length: 31457280", b"401"),
        (start + "Authorization: Bearer lmos-wrong\r\nContent-Length: 31457280", b"401"),
        (start + f"Authorization: Bearer {tiny_server.admin_key}\r\nContent-Length: 31457280", b"413"),
    ):
        answer, closed = _closed_after_answer(tiny_server.url, head)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert closed and b"connection: close" in answer.lower(), answer[:300]


def test_a_refusal_without_a_body_keeps_the_connection(tiny_server):
    with httpx.Client(base_url=tiny_server.url, headers={"Authorization": "Bearer lmos-wrong"}) as bad:
        assert bad.get("/v1/models").status_code == 401
        assert "close" not in bad.get("/v1/models").headers.get("connection", "")


def test_an_oversized_body_without_a_content_length_is_refused_while_read(tiny_server):
    def chunks():
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(12):
            yield b"a" * 2**20
        yield b'"}]}'

    r = tiny_server.client().post(
        "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers  # sent chunked
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert "limit" in error["message"] and error["code"] == "request_too_large"


def test_a_body_under_the_limit_still_works(tiny_server):
    body = {**CHAT, "padding": "x" * 2**20}  # an unknown field: ignored
    assert tiny_server.client().post("/v1/chat/completions", json=body).status_code == 200


def test_failed_authentication_is_rate_limited_and_audited_in_aggregate(tiny_server):
    bad = httpx.Client(base_url=tiny_server.url, headers={"Authorization": "Bearer lmos-wrong"})
    good = tiny_server.client()
    assert good.get("/os/ps").status_code == 200  # a key that worked before the attack
    statuses = [bad.get(f"/probe/{i}").status_code for i in range(60)]
    policy = FailedAuthPolicy()
    assert statuses[: policy.free_failures] == [401] * policy.free_failures
    assert statuses.count(429) >= 40  # locked out: later requests are not even checked
    r = bad.get("/v1/models")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "failed authentications" in r.json()["error"]["message"]
    assert good.get("/os/ps").status_code == 200  # the working key is not locked out with them
    rows = [r for r in AuditLog().query(app="?")]
    assert len(rows) == policy.audited_per_window  # one row each only for the first few
    assert {r["call"] for r in rows} == {"http GET unmatched"}


def test_failed_authentication_summaries_are_one_row_per_address_and_window():
    now = [0.0]
    guard = FailedAuthGuard(FailedAuthPolicy(free_failures=2, audited_per_window=2), clock=lambda: now[0])
    audited = [guard.failed("10.0.0.1") for _ in range(5)]
    assert audited == [True, True, False, False, False]
    assert guard.retry_after("10.0.0.1", None) is not None  # locked out after the free failures
    assert guard.retry_after("10.0.0.2", None) is None  # other addresses are not
    assert guard.finished_windows() == []  # the window is still open
    now[0] = 61.0
    (summary,) = guard.finished_windows()
    assert (summary.failures, summary.audited, summary.throttled) == (5, 2, 1)
    now[0] = 1000.0
    assert guard.finished_windows() == [] and guard.addresses == 0  # quiet addresses are forgotten


def test_the_lockout_doubles_with_each_further_failure():
    now = [0.0]
    guard = FailedAuthGuard(FailedAuthPolicy(free_failures=1), clock=lambda: now[0])
    lockouts = []
    for _ in range(5):
        guard.failed("a")
        lockouts.append(guard.retry_after("a", None) or 0.0)
        now[0] += lockouts[-1]
    assert lockouts == [0.0, 1.0, 2.0, 4.0, 8.0]


def test_a_burst_of_new_keys_waits_its_turn_to_be_checked_and_is_never_refused(tiny_server, monkeypatch):
    """Every app on loopback shares 127.0.0.1: 32 concurrent requests with keys never seen before
    are all served, while at most `free_failures` of them are looked up at once (a burst of bad keys
    is thus checked no faster than failures are allowed)."""
    apps = tiny_server.syscalls.apps
    authenticate, running, most = apps.authenticate, [0], [0]
    lock = threading.Lock()

    def counting(key):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)  # long enough for the burst to pile up behind the first lookups
            return authenticate(key)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(apps, "authenticate", counting)
    # A key of its own each: a key once verified is answered from memory (AppRegistry.verified).
    keys = [tiny_server.new_app("bursty")] + [apps.issue_key("bursty") for _ in range(31)]
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda key: tiny_server.client(key).get("/os/ps").status_code, keys))
    assert codes == [200] * 32
    assert 1 < most[0] <= FailedAuthPolicy().free_failures


def test_the_guard_remembers_a_bounded_number_of_addresses():
    guard = FailedAuthGuard(FailedAuthPolicy(max_addresses=100))
    for i in range(5000):
        guard.failed(f"10.0.{i // 256}.{i % 256}")
    assert guard.addresses == 100


def test_metric_labels_are_route_templates_not_raw_paths(tiny_server):
    admin = tiny_server.client()
    bad = httpx.Client(base_url=tiny_server.url, headers={"Authorization": "Bearer lmos-wrong"})
    narrow = tiny_server.client(tiny_server.new_app("narrow"))

    def requests_on_distinct_paths(start: int, count: int) -> None:
        for i in range(start, start + count):
            bad.get(f"/nothing/{i}/here")  # 401, or 429 once locked out
            admin.get(f"/os/tasks/{1000 + i}")  # 404
            narrow.delete(f"/os/apps/app{i}")  # 403, audited under the template

    # A refused key on a real route is named by its template: FastAPI keeps each included router as
    # one entry whose own `matches` finds nothing outside its dispatch, so these were once "unmatched".
    assert bad.get("/os/tasks/12345").status_code == 401
    assert bad.post("/v1/chat/completions", json=CHAT).status_code == 401
    requests_on_distinct_paths(0, 1)
    series = admin.get("/metrics").text.count("\n")
    requests_on_distinct_paths(1, 40)
    text = admin.get("/metrics").text
    assert "/nothing/" not in text and "app7" not in text
    assert 'call="http GET unmatched"' in text
    assert 'app="?",call="http GET /os/tasks/{pid}",outcome="denied"' in text
    assert 'app="?",call="http POST /v1/chat/completions",outcome="denied"' in text
    assert 'call="http DELETE /os/apps/{name}"' in text
    assert text.count("\n") - series <= 2  # at most the 429 outcome joins; no label per path


def test_anonymous_servers_refuse_other_host_names(anonymous_server):
    url = anonymous_server.url
    assert httpx.post(url + "/v1/chat/completions", json=CHAT).status_code == 200
    r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"Host": "attacker.example:80"})
    assert r.status_code == 400
    assert "attacker.example" in r.json()["error"]["message"]
    assert httpx.get(url + "/healthz", headers={"Host": "localhost"}).status_code == 200


def test_servers_with_keys_answer_any_host_name(tiny_server):
    r = tiny_server.client().get("/os/ps", headers={"Host": "my-box.lan"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/docs"])
def test_public_paths_need_no_key(tiny_server, path):
    assert httpx.get(tiny_server.url + path).status_code == 200


def test_a_huge_prompt_is_refused_before_tokenizing(tiny_server):
    body = {**CHAT, "messages": [{"role": "user", "content": "word " * 600_000}]}
    started = time.monotonic()
    r = tiny_server.client().post("/v1/chat/completions", json=body)
    assert r.status_code == 413, r.text
    assert "shorten it by at least" in r.json()["error"]["message"]
    assert "characters" in r.json()["error"]["message"]
    print(f"refused in {time.monotonic() - started:.3f} s")


def test_concurrent_requests_stay_within_the_token_quota(tiny_server):
    """The reproduction: 20 concurrent requests of max_tokens 300 from an app allowed 2,000 a minute."""

    key = tiny_server.new_app("metered", tokens_per_minute=2000)
    body = {"model": "tiny", "prompt": "a b c d", "max_tokens": 300, "temperature": 1.0}

    def one(_: int) -> httpx.Response:
        with tiny_server.client(key) as client:
            return client.post("/v1/completions", json=body)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == 20 and refused
    assert sum(r.json()["usage"]["total_tokens"] for r in ok) <= 2000
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)


def test_a_valid_key_is_let_in_without_naming_the_route(tiny_server, monkeypatch):
    """The route's template names refusals only; matching every request's path against every route
    in the authentication middleware cost a quarter of the event loop in a storm of streams."""
    from llmasos.api import auth

    matched: list[str] = []
    real = auth.route_template
    monkeypatch.setattr(
        auth, "route_template", lambda routes, scope: matched.append(scope["path"]) or real(routes, scope)
    )
    client = tiny_server.client(tiny_server.new_app("keyed"))
    assert client.get("/os/ps").status_code == 200
    assert matched == []
    assert (
        httpx.get(tiny_server.url + "/os/ps", headers={"Authorization": "Bearer lmos-wrong"}).status_code
        == 401
    )
    assert matched == ["/os/ps"]
