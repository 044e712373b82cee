"""The console's HTTP side without a browser: the page is public and served with its security
headers, the overview follows the caller's rights, the live stream is audited once when opened,
and the calls the page's actions use check their input and rights."""

from __future__ import annotations

import json
import re

import httpx

from llmasos.console.routes import STATIC, VIEW_SECTIONS
from llmasos.kernel.overview_calls import SECTIONS
from tests.api.conftest import LiveServer
from tests.console.test_console_browser import audit_rows


def test_the_page_is_public_and_strict(console_server: LiveServer):
    with httpx.Client(base_url=console_server.url) as anonymous:
        assert anonymous.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
        page = anonymous.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert (
            "script-src 'self';" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
        )
        assert "frame-ancestors 'none'" in policy and page.headers["x-frame-options"] == "DENY"
        assert "<script>" not in page.text  # every script is a file the policy allows
        assert anonymous.get("/ui/js/main.js").headers["content-type"].startswith("text/javascript")
        # only the page's own files, never the package's others (a client may normalise `..` away,
        # and then the path is outside /ui and needs a key)
        for path in (
            "/ui/../routes.py",
            "/ui/%2e%2e/routes.py",
            "/ui/..%2froutes.py",
            "/ui/vendor/uplot/LICENSE",
        ):
            response = anonymous.get(path)
            assert response.status_code in (401, 404) and "APIRouter" not in response.text, path
        assert anonymous.get("/ui/nope.js").status_code == 404
        assert anonymous.get("/os/console/overview").status_code == 401  # the data needs a key


def test_every_tab_has_its_sections_and_the_page_reads_them_from_the_served_file(console_server: LiveServer):
    tabs = re.findall(r'data-view="([a-z]+)"', (STATIC / "index.html").read_text())
    assert tabs and sorted(tabs) == sorted(VIEW_SECTIONS)
    assert all(set(sections) <= SECTIONS for sections in VIEW_SECTIONS.values()), VIEW_SECTIONS
    with httpx.Client(base_url=console_server.url) as anonymous:
        served = anonymous.get("/ui/js/view_sections.json")
    assert served.headers["content-type"].startswith("application/json")
    assert served.json() == VIEW_SECTIONS


def test_the_overview_follows_the_callers_rights(console_server: LiveServer):
    key = console_server.new_app("solo")
    with console_server.client(key) as solo:
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        assert solo.post("/v1/chat/completions", json=chat).status_code == 200
        mine = solo.get("/os/console/overview").json()
    assert mine["caller"] == {"app": "solo", "admin": False}
    assert [a["name"] for a in mine["apps"]] == ["solo"]
    assert {p["app"] for p in mine["processes"]} == {"solo"}
    assert {r["app"] for r in mine["audit"]} == {"solo"}
    assert {s["app"] for s in mine["latency"]} == {"solo"}
    assert all("prompt" not in r and "output" not in r for r in mine["audit"])
    with console_server.client() as admin:
        everything = admin.get("/os/console/overview").json()
    assert {"solo", "admin"} <= {a["name"] for a in everything["apps"]}
    assert everything["nodes"] == []


def test_the_stream_is_audited_when_opened_not_per_snapshot(console_server: LiveServer):
    before = len(audit_rows(console_server, app="admin"))
    snapshots = []
    with console_server.client() as admin, admin.stream("GET", "/os/console/stream?interval=0.25") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                snapshots.append(json.loads(line[6:]))
            if len(snapshots) == 3:
                break
    assert all(s["caller"]["app"] == "admin" for s in snapshots)
    rows = audit_rows(console_server, app="admin")
    new = [r["call"] for r in rows[: len(rows) - before]]
    assert new.count("overview.watch") == 1 and "overview" not in new


def test_app_changes_check_rights_and_input(console_server: LiveServer):
    key = console_server.new_app("delta")
    with console_server.client(key) as delta, console_server.client() as admin:
        assert delta.patch("/os/apps/delta", json={"priority": "realtime"}).status_code == 403
        assert delta.post("/os/apps/delta/keys").status_code == 403
        assert admin.patch("/os/apps/delta", json={"priority": "urgent"}).status_code == 422
        assert admin.patch("/os/apps/delta", json={"weight": 0}).status_code == 422
        assert admin.patch("/os/apps/delta", json={}).status_code == 400
        # unknown fields are ignored (the contract's rule), so a rename changes nothing and says so
        renamed = admin.patch("/os/apps/delta", json={"name": "other"})
        assert renamed.status_code == 400 and "nothing to change" in renamed.json()["error"]["message"]
        assert admin.patch("/os/apps/nobody", json={"weight": 2}).status_code == 404
        changed = admin.patch("/os/apps/delta", json={"priority": "batch", "max_concurrent": 2})
        assert changed.status_code == 200 and changed.json()["priority"] == "batch"
        assert delta.get("/os/apps/delta").json()["max_concurrent"] == 2
        assert delta.get("/os/audit?app=admin").status_code == 403  # an app reads its own rows only
    denied = [r for r in audit_rows(console_server, app="delta") if r["call"] == "http PATCH /os/apps/{name}"]
    assert denied and not denied[0]["allowed"]


def events(console_server: LiveServer, query: str, count: int) -> list[dict]:
    """The first `count` events of the admin's overview stream opened with `query`."""
    out = []
    with console_server.client() as admin, admin.stream("GET", f"/os/console/stream?{query}") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
            if len(out) == count:
                return out
    return out


def test_the_stream_builds_only_the_sections_asked_for_and_then_only_what_changed(console_server: LiveServer):
    key = console_server.new_app("sections")
    with console_server.client(key) as app:  # an ended process: the processes section is not empty
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert app.post("/v1/chat/completions", json=chat).status_code == 200
    first, *later = events(console_server, "interval=0.25&views=processes,nodes", 4)
    assert set(first) == {"caller", "now", "processes", "nodes"}  # nothing else is built or sent
    overview = api_overview(console_server)
    ended = {p["pid"]: p for p in overview["processes"] if p["state"] == "finished"}
    assert {p["pid"]: p for p in first["processes"] if p["pid"] in ended} == ended
    # nothing runs: later events say only that the server is there, and when
    assert [set(e) for e in later] == [{"caller", "now"}] * 3
    assert all(b["now"] > a["now"] for a, b in zip([first, *later], later, strict=False))
    assert set(events(console_server, "views=", 1)[0]) == {"caller", "now"}
    with console_server.client() as admin:
        wrong = admin.get("/os/console/stream?views=processes,nope")
    assert wrong.status_code == 400 and "'nope'" in wrong.json()["error"]["message"]
    assert "processes" in wrong.json()["error"]["message"]  # it names the sections there are


def api_overview(console_server: LiveServer) -> dict:
    with console_server.client() as admin:
        return admin.get("/os/console/overview").json()


def test_an_apps_data_inventory_is_its_own_or_the_admins(console_server: LiveServer):
    key = console_server.new_app("stock")
    other = console_server.new_app("nosy")
    with console_server.client(key) as stock:
        empty = stock.get("/os/apps/stock/data/inventory").json()  # nothing stored yet, nothing made
        assert (empty["documents"], empty["conversations"], empty["usage"]) == ([], [], None)
        for size in (10, 300, 40):
            upload = {"file": (f"f{size}.txt", b"z" * size)}
            assert stock.post("/v1/files", files=upload, data={"purpose": "assistants"}).status_code == 200
        mine = stock.get("/os/apps/stock/data/inventory?limit=2").json()
    assert [d["bytes"] for d in mine["documents"]] == [300, 40]  # the largest, first
    assert mine["usage"]["files"] == 3 and mine["usage"]["bytes"] >= 350
    with console_server.client(other) as nosy:
        refused = nosy.get("/os/apps/stock/data/inventory")
    assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]
    with console_server.client() as admin:
        assert len(admin.get("/os/apps/stock/data/inventory").json()["documents"]) == 3
        assert admin.get("/os/apps/stock/data/inventory?limit=0").status_code == 422
        assert admin.get("/os/apps/nobody/data/inventory").status_code == 404
    calls = [(r["call"], r["target"]) for r in audit_rows(console_server, app="admin")]
    assert ("data.inventory", "stock") in calls
