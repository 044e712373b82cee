"""/metrics grows with the configuration (apps, models, routes, error kinds), never with what a client
sends.

In `benchmarks/abuse.py --quick`, /metrics went from 123 to 452 series. The growth was the apps that
ran their first generation during the run (`metered`, `idle`, `storm`): each (model, app) pair that
has ended a process gets four latency histograms of 24 series and a few counters, about 110 series an
app, which an admin bounds by creating apps. These tests pin that down: attacker-shaped requests
with a fresh marker in every field a client controls (paths, model, service and tool names, priority,
JSON shapes, oversized bodies, hang-ups, quota overshoot) add no series once each kind has been seen,
and no marker ever becomes a label.
"""

from __future__ import annotations

import re
import time
import uuid

import httpx

from llmasos.kernel.latency import LATENCY_BUCKETS

SERIES = re.compile(r"^(\w+)(?:\{(.*)\})? ", re.MULTILINE)


def series(text: str) -> set[str]:
    """Each series of a Prometheus page, as `name{labels}`."""
    return {f"{name}{{{labels}}}" for name, labels in SERIES.findall(text)}


def attack(url: str, keys: dict[str, str], marker: str) -> None:
    """One round of the abuse run's requests, `marker` in every value the client chooses."""
    guess = httpx.Client(base_url=url, headers={"Authorization": f"Bearer lmos-{marker}"}, timeout=30)
    calls = {name: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
             for name, key in keys.items()}  # fmt: skip
    chat = {"model": "tiny", "messages": [{"role": "user", "content": f"hi {marker}"}], "max_tokens": 3}
    guess.get(f"/v1/{marker}/probe")
    guess.post("/v1/chat/completions", json=chat)
    app = calls["storm"]
    app.get(f"/{marker}")
    app.get(f"/os/tasks/{abs(hash(marker)) % 10**6 + 10**6}")
    app.post("/v1/chat/completions", json={**chat, "model": f"model-{marker}"})
    app.post("/v1/chat/completions", json={**chat, "priority": f"class-{marker}"})
    app.post("/v1/chat/completions", json={**chat, marker: {"a": [[[[marker]]]]}, "max_tokens": marker})
    app.post("/v1/chat/completions", content=b'{"model": "tiny", "messages": [' + marker.encode())
    app.post("/v1/chat/completions", json={**chat, "messages": [{"role": "user", "content": "w " * 40_000}]})
    app.post("/v1/chat/completions", content=b"x" * (9 << 20))  # over the body limit
    app.post(f"/os/services/{marker}", json={"input": marker})
    app.post("/os/services/summarize", json={"input": marker, "params": {marker: 1}})
    with app.stream("POST", "/v1/chat/completions", json={**chat, "stream": True, "max_tokens": 50}) as r:
        next(r.iter_lines())  # and hang up
    for _ in range(3):  # over the metered app's quota: 429
        calls["metered"].post("/v1/chat/completions", json={**chat, "max_tokens": 60})
    calls["calm"].post("/v1/chat/completions", json=chat)


def settle(admin: httpx.Client, timeout: float = 30.0) -> None:
    """Until no process is live: the hung-up stream's process ends a moment after the client left (the
    server notices within its disconnect poll), and its cancel adds series of its own."""
    deadline = time.monotonic() + timeout
    while admin.get("/os/ps", params={"all": "false"}).json()["processes"]:
        assert time.monotonic() < deadline, "processes still live after the attack"
        time.sleep(0.05)


def test_series_grow_with_apps_never_with_what_clients_send(tiny_server):
    keys = {
        "storm": tiny_server.new_app("storm"),
        "metered": tiny_server.new_app("metered", tokens_per_minute=100),
        "calm": tiny_server.new_app("calm", priority="interactive"),
    }
    admin = tiny_server.client()
    markers = [uuid.uuid4().hex[:12] for _ in range(3)]
    attack(tiny_server.url, keys, markers[0])
    settle(admin)
    seen = series(admin.get("/metrics").text)
    for marker in markers[1:]:
        attack(tiny_server.url, keys, marker)
    settle(admin)
    text = admin.get("/metrics").text
    assert not any(marker in text for marker in markers)
    new = series(text) - seen
    # Only outcomes that come with time may join: a lockout's 429 for the guessing address, and the
    # hung-up stream's end (its 50 tokens race the server noticing the hang-up: a round where they
    # won ends it "finished", one where they lost "cancelled"; CI saw the cancelled series first in
    # the second round, and a full local run the finished ones). The server's cancel for a client
    # that left is no call of the app's: it adds no `cancel` series (Syscalls.abandon).
    ended = {
        f'llmasos_{name}{{app="storm",{label}="{outcome}"}}'
        for outcome in ("cancelled", "finished")
        for name, label in (("processes_ended_total", "state"), ("requests_total", 'call="chat",outcome'))
    }
    assert all(("outcome=" in s and 'app="?"' in s) or s in ended for s in new), sorted(new)
    assert len(new - ended) <= 2, sorted(new)
    # Keyless requests never reach the kernel: their app `?` has call and error series, not the
    # per-app token, wait and preemption series at 0 that every app once got with its first call.
    assert 'llmasos_requests_total{app="?"' in text
    assert not [s for s in series(text) if s.startswith("llmasos_app_") and 'app="?"' in s]

    # What does grow: each app that ends its first process adds its own fixed share, no more.
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    before = series(text)
    for i in range(3):
        key = tiny_server.new_app(f"app{i}")
        tiny_server.client(key).post("/v1/chat/completions", json=chat).raise_for_status()
    text = admin.get("/metrics").text
    apps = {a.name for a in tiny_server.syscalls.apps.list()} | {"?"}
    assert set(re.findall(r'app="([^"]*)"', text)) <= apps
    added = series(text) - before
    per_app = [{s for s in added if f'app="app{i}"' in s} for i in range(3)]
    assert len(per_app[0]) == len(per_app[1]) == len(per_app[2])
    assert added == per_app[0] | per_app[1] | per_app[2]  # nothing beside the apps' own series
    # Four latency histograms of (buckets + inf + count + sum + created) each, and the app's counters.
    histogram_series = 4 * (len(LATENCY_BUCKETS) + 4)
    assert histogram_series <= len(per_app[0]) <= histogram_series + 16
