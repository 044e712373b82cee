"""The web console in a real headless Chromium, on a live server with work running.

Each view is read from the page's DOM and compared with what `/os/...` and `/metrics` report for
the same state; each action is clicked on the page and then checked to have taken effect (through
the API) and to be in the audit log; an app's key sees nothing of other apps; the page keeps no key
in its storage, cookies or URLs, and runs under a strict Content-Security-Policy without errors.
Screenshots of each view are saved under tests/console/screenshots/ (the path is printed).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import LiveServer
from tests.console.conftest import eventually

pytestmark = pytest.mark.timeout(120)

VIEWS = ("processes", "apps", "models", "latency", "audit", "workflows", "data", "nodes", "playground")


# ---- work on the server, and reading it through the API -------------------------------------------


@pytest.fixture(scope="package")
def work(console_server: LiveServer) -> dict[str, str]:
    """Two apps with finished chats on the tiny model; returns their keys."""
    keys = {
        "alpha": console_server.new_app("alpha", priority="interactive"),
        "beta": console_server.new_app("beta", priority="batch"),
    }
    for name, count in (("alpha", 3), ("beta", 2)):
        with console_server.client(keys[name]) as client:
            for i in range(count):
                assert client.post("/v1/chat/completions", json=chat(f"hello {i}", 6)).status_code == 200
    with console_server.client(keys["beta"]) as client:  # a denial, for the audit view to highlight
        assert client.get("/metrics").status_code == 403
    return keys


def chat(text: str, max_tokens: int) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


def api(server: LiveServer, path: str, key: str | None = None) -> dict:
    with server.client(key) as client:
        response = client.get(path)
        response.raise_for_status()
        return response.json()


def metrics(server: LiveServer) -> dict[tuple[str, tuple], float]:
    with server.client() as client:
        text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def audit_rows(server: LiveServer, **filters) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return api(server, f"/os/audit?limit=200&{query}")["rows"]


@contextlib.contextmanager
def slow_engine(server: LiveServer, seconds_per_step: float) -> Iterator[None]:
    """Each engine step takes `seconds_per_step` longer, so a generation runs long enough to be seen
    and cancelled from the page."""
    engine = server.engine()
    step = engine.step

    def slow(*args, **kwargs):
        time.sleep(seconds_per_step)
        return step(*args, **kwargs)

    engine.step = slow
    try:
        yield
    finally:
        del engine.step  # the class's method again


def start_stream(server: LiveServer, key: str, max_tokens: int = 200) -> tuple[threading.Thread, dict]:
    """A streamed chat in a thread; `out["pid"]` once the server has answered the headers."""
    out: dict = {}

    def run():
        body = {**chat("go", max_tokens), "stream": True}
        headers = {"Authorization": f"Bearer {key}"}
        url = server.url + "/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as r:
            out["pid"] = int(r.headers["x-llmasos-pids"])
            out["text"] = "".join(r.iter_text())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    eventually(lambda: "pid" in out)
    return thread, out


# ---- driving the page ------------------------------------------------------------------------------


def sign_in(page, key: str, *, remember: bool = False) -> None:
    page.fill("#signin-key", key)
    page.set_checked("#signin-remember", remember)
    page.click("#signin-button")
    page.wait_for_selector("#console:not([hidden])")
    fresh(page)


def fresh(page, snapshots: int = 2) -> None:
    """Wait until the page has shown `snapshots` more overviews from the stream."""

    def updates() -> int:
        return int(page.evaluate("document.body.dataset.updates || 0"))

    seen = updates()  # polled from here: wait_for_function evaluates a string, which the page's CSP forbids
    eventually(lambda: updates() >= seen + snapshots)


def show(page, view: str) -> None:
    page.click(f"#tabs button[data-view={view}]")
    page.wait_for_selector(f"#view-{view}:not([hidden])")


def rows(page, table: str) -> list[dict]:
    """The rows of table `#table`: each cell's text by its field, the row's key and class."""
    return page.evaluate(
        """(id) => [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) => ({
            _key: tr.dataset.key, _class: tr.className,
            ...Object.fromEntries([...tr.querySelectorAll('td[data-field]')]
                .map((td) => [td.dataset.field, td.textContent])),
        }))""",
        table,
    )


def by_key(page, table: str) -> dict[str, dict]:
    return {r["_key"]: r for r in rows(page, table)}


# ---- the views show what the API reports ---------------------------------------------------------


def test_each_view_shows_what_the_os_endpoints_and_metrics_report(page, console_server, work, screenshots):
    sign_in(page, console_server.admin_key)
    assert page.text_content("#who") == "admin (admin)"
    with slow_engine(console_server, 0.05):
        thread, running = start_stream(console_server, work["alpha"])
        page.wait_for_selector(f"#processes-table tr[data-key='{running['pid']}'].running")
        page.screenshot(path=str(screenshots / "processes.png"), full_page=True)
        shown = by_key(page, "processes-table")
        live = {p["pid"]: p for p in api(console_server, "/os/ps")["processes"]}
        # every process the API lists (live and ended) is on the page with its app, model, priority
        ended_shown = [pid for pid, p in live.items() if p["state"] in ("finished", "cancelled", "failed")]
        for pid in [running["pid"], *ended_shown]:
            row, proc = shown[str(pid)], live[pid]
            fields = ("app", "model", "priority")
            assert [row[f] for f in fields] == [proc[f] for f in fields]
        for pid in ended_shown:  # ended: their numbers no longer move, so they must be equal
            row, proc = shown[str(pid)], live[pid]
            assert (row["state"], int(row["tokens_in"]), int(row["tokens_out"])) == (
                proc["state"],
                proc["tokens_in"],
                proc["tokens_out"],
            )
        assert shown[str(running["pid"])]["state"] == "running"
        page.click(f"#processes-table tr[data-key='{running['pid']}'] button")  # cancel it from the page
        thread.join(timeout=30)
    assert api(console_server, f"/os/tasks/{running['pid']}")["state"] == "cancelled"
    cancels = audit_rows(console_server, app="admin")
    assert any(r["call"] == "cancel" and r["target"] == str(running["pid"]) for r in cancels)

    show(page, "apps")
    fresh(page)
    page.screenshot(path=str(screenshots / "apps.png"), full_page=True)
    apps = {a["name"]: a for a in api(console_server, "/os/apps")["apps"]}
    shown_apps = by_key(page, "apps-table")
    assert set(shown_apps) == set(apps)
    for name, app in apps.items():
        row = page.locator(f"#apps-table tr[data-key='{name}']")
        assert row.locator("select.priority").input_value() == app["priority"]
        assert float(row.locator("input.weight").input_value()) == app["weight"]
        assert shown_apps[name]["keys"] == (", ".join(app["keys"]) or "none")

    show(page, "models")
    fresh(page)
    page.screenshot(path=str(screenshots / "models.png"), full_page=True)
    models = {m["name"]: m for m in api(console_server, "/os/models")["models"]}
    numbers = metrics(console_server)
    tiny = by_key(page, "models-table")["tiny"]
    assert tiny["resident"] == ("yes" if models["tiny"]["resident"] else "no")
    used = numbers[("llmasos_kv_blocks", (("model", "tiny"), ("state", "used")))]
    free = numbers[("llmasos_kv_blocks", (("model", "tiny"), ("state", "free")))]
    assert tiny["kv_blocks"] == f"{int(used)} / {int(used + free)}"  # idle now: nothing moves
    hits = numbers[("llmasos_prefix_cache_hit_tokens_total", (("model", "tiny"),))]
    queries = numbers[("llmasos_prefix_cache_query_tokens_total", (("model", "tiny"),))]
    assert tiny["hit_rate"] == (f"{100 * hits / queries:.1f}%" if queries else "–")
    overview = api(console_server, "/os/console/overview")
    assert overview["models"]["memory_used_bytes"] == numbers[("llmasos_memory_used_bytes", ())]

    show(page, "latency")
    fresh(page)
    page.wait_for_selector("#chart-ttft canvas")
    page.screenshot(path=str(screenshots / "latency.png"), full_page=True)
    for key, row in by_key(page, "latency-table").items():
        model, app = key.split("/")
        observed = numbers[("llmasos_time_to_first_token_seconds_count", (("app", app), ("model", model)))]
        assert int(row["ttft_count"]) == observed  # every request the histogram holds, in the last hour

    show(page, "audit")
    fresh(page)
    page.screenshot(path=str(screenshots / "audit.png"), full_page=True)
    shown_audit = rows(page, "audit-table")
    newest = [r["id"] for r in audit_rows(console_server)]
    top = [int(r["_key"]) for r in shown_audit]
    assert top[:5] == [i for i in newest if i <= top[0]][:5]  # the same rows, newest first
    denied = [r for r in shown_audit if r["_class"] == "denied"]
    assert denied and all(r["outcome"] == "denied" and r["reason"] for r in denied)
    assert any(r["app"] == "beta" and "/metrics" in r["call"] for r in denied)
    page.set_checked("#audit-denied", True)
    assert {r["_class"] for r in rows(page, "audit-table")} == {"denied"}
    page.screenshot(path=str(screenshots / "audit-denials.png"), full_page=True)

    show(page, "nodes")
    assert page.is_visible("#nodes-empty") and rows(page, "nodes-table") == []
    page.screenshot(path=str(screenshots / "nodes.png"), full_page=True)
    for view in ("workflows", "data"):
        show(page, view)
        page.screenshot(path=str(screenshots / f"{view}.png"), full_page=True)
    data = {r["_key"]: r for r in eventually(lambda: rows(page, "data-usage-table"))}
    assert set(data) == set(apps)
    assert page.errors == []
