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

from llmasos.console.routes import VIEW_SECTIONS as CONSOLE_VIEW_SECTIONS
from tests.api.conftest import LiveServer
from tests.console.conftest import eventually

pytestmark = pytest.mark.timeout(120)

VIEWS = ("processes", "apps", "models", "latency", "audit", "workflows", "data", "nodes", "playground")
#: The sections of the overview each view follows, as the stream's `views=` spells them.
VIEW_SECTIONS = {view: ",".join(sections) for view, sections in CONSOLE_VIEW_SECTIONS.items()}


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
    with console_server.client(keys["alpha"]) as client:  # data, for the data view to weigh
        upload = client.post(
            "/v1/files", files={"file": ("notes.txt", b"x" * 3000)}, data={"purpose": "assistants"}
        )
        assert upload.status_code == 200, upload.text
        assert client.post("/v1/files", files={"file": ("todo.md", b"y" * 500)}).status_code == 200
        assert client.post("/v1/vector_stores", json={"name": "shelf"}).status_code == 200
        for texts in (["a short one"], ["a longer conversation", "with two messages in it"]):
            items = [{"type": "message", "role": "user", "content": t} for t in texts]
            assert client.post("/v1/conversations", json={"items": items}).status_code == 200
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


def shown_bytes(n: float) -> str:
    """How the page writes a byte count (dom.js `bytes`)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.{1 if i else 0}f} {units[i]}"


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
    fresh(page, 1)  # the first snapshot of the live stream


def fresh(page, snapshots: int = 2) -> None:
    """Wait until the page has shown `snapshots` more overviews from the stream."""

    def updates() -> int:
        return int(page.evaluate("document.body.dataset.updates || 0"))

    seen = updates()  # polled from here: wait_for_function evaluates a string, which the page's CSP forbids
    eventually(lambda: updates() >= seen + snapshots)


def show(page, view: str) -> None:
    """Show `view` and wait for the first snapshot of its own stream (the page follows only what
    its visible view shows)."""
    page.click(f"#tabs button[data-view={view}]")
    page.wait_for_selector(f"#view-{view}:not([hidden])")
    page.wait_for_selector(f"body[data-following={view}]")


def rows(page, table: str) -> list[dict]:
    """The rows of table `#table`: each cell's text by its field, the row's key and class."""
    return page.evaluate(
        """(id) => [...document.querySelectorAll(`#${id} tbody tr[data-key]`)].map((tr) => ({
            _key: tr.dataset.key, _class: tr.className,
            ...Object.fromEntries([...tr.querySelectorAll('td[data-field]')]
                .map((td) => [td.dataset.field, td.textContent])),
        }))""",
        table,
    )


def rows_touched_over(page, table: str, snapshots: int) -> set[str]:
    """The keys of the rows of `#table` whose DOM the page changed (or replaced) while it showed
    `snapshots` more overviews: a refresh rewrites the cells that changed, not the table."""
    page.evaluate(
        """(id) => {
            const body = document.querySelector(`#${id} tbody`);
            window.touchedRows = new Set();
            for (const tr of body.rows) tr.watched = true;
            window.rowWatch = new MutationObserver((records) => {
                for (const r of records) {
                    const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
                    const tr = node && node.closest("tr");
                    if (tr && tr.parentElement === body) window.touchedRows.add(tr.dataset.key);
                    for (const added of r.addedNodes) {
                        const row = added.tagName === "TR" && !added.watched;
                        if (row) window.touchedRows.add(added.dataset.key);
                    }
                }
            });
            const what = { subtree: true, childList: true, characterData: true, attributes: true };
            window.rowWatch.observe(body, what);
        }""",
        table,
    )
    fresh(page, snapshots)
    return set(page.evaluate("() => { window.rowWatch.disconnect(); return [...window.touchedRows]; }"))


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
        cancel_button = f"#processes-table tr[data-key='{running['pid']}'] button"
        page.eval_on_selector(cancel_button, "(button) => { button.kept = true; }")
        touched = rows_touched_over(page, "processes-table", snapshots=2)
        assert str(running["pid"]) in touched  # its tokens and times move: its cells are rewritten
        # but not its Cancel button, which is the same while the process lives
        assert page.eval_on_selector(cancel_button, "(button) => button.kept === true")
        assert touched <= {str(running["pid"])}  # the ended rows, which do not change, are left alone
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
        # its KV, in the models view, under its app: at least its prompt's blocks (block_size 4)
        show(page, "models")
        kv = eventually(lambda: by_key(page, "kv-table").get("tiny/alpha"))
        assert int(kv["blocks"]) * 4 >= live[running["pid"]]["tokens_in"] and kv["tokens"] == str(
            4 * int(kv["blocks"])
        )
        page.screenshot(path=str(screenshots / "models-running.png"), full_page=True)
        show(page, "processes")
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
    page.wait_for_selector("#chart-ttft canvas")
    page.screenshot(path=str(screenshots / "latency.png"), full_page=True)
    for chart in ("ttft", "tpot"):  # every tick of the y axes is its own number
        ticks = page.get_attribute(f"#chart-{chart}", "data-y-ticks").split()
        assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), ticks
    for key, row in by_key(page, "latency-table").items():
        model, app = key.split("/")
        observed = numbers[("llmasos_time_to_first_token_seconds_count", (("app", app), ("model", model)))]
        assert int(row["ttft_count"]) == observed  # every request the histogram holds, in the last hour

    show(page, "audit")
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

    show(page, "nodes")  # a single box (the nodes of a cluster: tests/cluster/test_console_nodes.py)
    assert page.is_visible("#nodes-empty") and rows(page, "nodes-table") == []
    page.screenshot(path=str(screenshots / "nodes-single-box.png"), full_page=True)
    show(page, "workflows")
    page.screenshot(path=str(screenshots / "workflows-none-shown.png"), full_page=True)
    check_the_data_view(page, console_server, work, set(apps), screenshots)
    assert page.errors == []


def check_the_data_view(page, console_server: LiveServer, work: dict, apps: set[str], screenshots) -> None:
    """Each app's usage against its quota, and one app's documents, vector stores and conversations
    by size, as /os/apps/{name}/data and alpha's own /v1 reads report them."""
    show(page, "data")
    data = by_key(page, "data-usage-table")
    assert set(data) == apps
    alpha = api(console_server, "/os/apps/alpha/data")
    assert alpha["bytes"] >= 3500 and data["alpha"]["storage_items"] == str(alpha["items"])
    assert data["alpha"]["storage_bytes"] == shown_bytes(alpha["bytes"])
    page.select_option("#data-app", "alpha")
    eventually(lambda: page.text_content("#inventory-app") == "alpha")
    page.screenshot(path=str(screenshots / "data.png"), full_page=True)
    files = sorted(api(console_server, "/v1/files", work["alpha"])["data"], key=lambda f: -f["bytes"])
    assert [(r["_key"], r["filename"], r["bytes"]) for r in rows(page, "files-table")] == [
        (f["id"], f["filename"], shown_bytes(f["bytes"])) for f in files
    ]
    stores = api(console_server, "/v1/vector_stores", work["alpha"])["data"]
    assert [(r["_key"], r["name"], r["files"], r["bytes"]) for r in rows(page, "stores-table")] == [
        (s["id"], s["name"], str(s["file_counts"]["total"]), shown_bytes(s["usage_bytes"])) for s in stores
    ]
    conversations = rows(page, "conversations-table")
    assert len(conversations) == alpha["conversations"] == 2
    texts = {}
    for row in conversations:
        items = api(console_server, f"/v1/conversations/{row['_key']}/items", work["alpha"])["data"]
        texts[row["_key"]] = sum(len(c["text"]) for i in items for c in i["content"])
        assert row["items"] == str(len(items))
    assert [r["_key"] for r in conversations] == sorted(texts, key=lambda c: -texts[c])  # largest first


# ---- actions take effect and are audited ----------------------------------------------------------


def audited(server: LiveServer, call: str, target: str, app: str = "admin") -> bool:
    return any(
        r["call"] == call and r["target"] == target and r["outcome"] == "ok"
        for r in audit_rows(server, app=app)
    )


def test_each_action_takes_effect_and_is_audited(page, console_server, work, screenshots):
    sign_in(page, console_server.admin_key)
    show(page, "apps")
    row = page.locator("#apps-table tr[data-key='beta']")
    row.locator("select.priority").select_option("interactive")
    row.locator("input.weight").fill("2.5")
    row.locator("button.save").click()
    beta = eventually(lambda: (a := api(console_server, "/os/apps/beta"))["priority"] == "interactive" and a)
    assert beta["weight"] == 2.5
    assert audited(console_server, "apps.update", "beta")
    fresh(page)  # the page shows the saved values once it has left the row
    assert page.locator("#apps-table tr[data-key='beta'] select.priority").input_value() == "interactive"

    # a new key, shown once, that works; then every key of the app revoked from the page
    row.locator("button.new-key").click()
    page.wait_for_selector("#key-once:not([hidden])")
    new_key = page.text_content("#key-once-value")
    page.screenshot(path=str(screenshots / "apps-new-key.png"), full_page=True)
    assert api(console_server, "/os/console/overview", new_key)["caller"]["app"] == "beta"
    assert audited(console_server, "apps.new_key", "beta")
    page.click("#key-once-dismiss")
    assert page.text_content("#key-once-value") == ""  # gone from the page once dismissed
    page.locator("#apps-table tr[data-key='beta'] button.revoke").click()
    with console_server.client(new_key) as client:
        eventually(lambda: client.get("/os/console/overview").status_code == 401)
    assert audited(console_server, "apps.revoke_keys", "beta")
    work["beta"] = console_server.syscalls.apps.issue_key("beta")  # for the tests after this one

    # an app created from the page, its key shown once
    page.fill("#app-create-name", "gamma")
    page.select_option("#app-create-priority", "batch")
    page.click("#app-create-button")
    page.wait_for_selector("#key-once:not([hidden])")
    assert page.text_content("#key-once-app") == "gamma"
    assert api(console_server, "/os/apps/gamma")["priority"] == "batch"
    assert audited(console_server, "apps.create", "gamma")
    page.click("#key-once-dismiss")

    # models: unload, then load again
    show(page, "models")
    page.click("#models-table tr[data-key='tiny'] button.unload")
    eventually(
        lambda: not {m["name"]: m for m in api(console_server, "/os/models")["models"]}["tiny"]["resident"]
    )
    assert audited(console_server, "models.unload", "tiny")
    page.wait_for_selector("#models-table tr[data-key='tiny'] button.load")
    page.screenshot(path=str(screenshots / "models-unloaded.png"), full_page=True)
    page.click("#models-table tr[data-key='tiny'] button.load")
    eventually(
        lambda: {m["name"]: m for m in api(console_server, "/os/models")["models"]}["tiny"]["resident"]
    )
    assert audited(console_server, "models.load", "tiny")

    # workflows: a run waiting for approval is approved from the page; another is cancelled
    gate = {
        "name": "gate",
        "steps": {
            "ok": {"kind": "wait"},
            "calc": {"kind": "tool", "name": "calculator", "needs": ["ok"], "input": {"expression": "1 + 1"}},
        },
        "output": "{{ steps.calc.output.value }}",
    }
    with console_server.client() as client:
        runs = [
            client.post("/os/workflows/runs", json={"spec": gate, "wait": True, "timeout_s": 10}).json()
            for _ in range(2)
        ]
    assert [r["status"] for r in runs] == ["waiting", "waiting"]
    show(page, "workflows")
    approve, cancel = runs
    page.click(f"#runs-table tr[data-key='{approve['id']}'] button.show-run")
    page.wait_for_selector("#run-steps tr[data-key='ok']")
    page.screenshot(path=str(screenshots / "workflows.png"), full_page=True)
    page.click(f"#runs-table tr[data-key='{approve['id']}'] button.approve")
    eventually(lambda: api(console_server, f"/os/workflows/runs/{approve['id']}")["status"] == "succeeded")
    page.click(f"#runs-table tr[data-key='{cancel['id']}'] button.cancel-run")
    eventually(lambda: api(console_server, f"/os/workflows/runs/{cancel['id']}")["status"] == "cancelled")
    calls = {(r["call"], r["target"]) for r in audit_rows(console_server, app="admin")}
    assert ("workflows.approve", f"{approve['id']}/ok") in calls
    assert ("workflows.cancel", cancel["id"]) in calls
    assert page.errors == []


# ---- an app's key sees its own app only ----------------------------------------------------------


def test_an_app_key_sees_nothing_of_other_apps(page, console_server, work, screenshots):
    with slow_engine(console_server, 0.05):
        thread, running = start_stream(console_server, work["alpha"], max_tokens=30)  # alpha's work runs
        sign_in(page, work["beta"])
        assert page.text_content("#who") == "beta"
        page.screenshot(path=str(screenshots / "app-key-processes.png"), full_page=True)
        processes = rows(page, "processes-table")
        assert processes and {r["app"] for r in processes} == {"beta"}
        assert str(running["pid"]) not in {r["_key"] for r in processes}
        mine = {p["pid"] for p in api(console_server, "/os/ps", work["beta"])["processes"]}
        assert {int(r["_key"]) for r in processes} <= mine
        for view in VIEWS:
            show(page, view)
            if view == "data":  # read when shown, not from the stream
                eventually(lambda: page.text_content("#inventory-app") == "beta")
            text = page.inner_text(f"#view-{view}")
            for other in ("alpha", "gamma"):  # ("admin" is a word of denial reasons)
                assert other not in text, f"{other!r} shown in the {view} view to app beta"
        assert {r["app"] for r in rows(page, "audit-table")} == {"beta"}
        assert [r["_key"] for r in rows(page, "apps-table")] == ["beta"]
        assert page.locator("#apps-table button").count() == 0 and page.is_hidden("#app-create")
        assert page.locator("#models-table button").count() == 0
        thread.join(timeout=30)
    assert page.errors == []


# ---- the playground ---------------------------------------------------------------------------------


def test_the_playground_streams_as_the_chosen_app_and_its_process_is_visible(
    page, console_server, work, screenshots
):
    sign_in(page, console_server.admin_key)
    show(page, "playground")
    page.fill("#play-key", work["alpha"])
    page.select_option("#play-target", "model:tiny")
    page.fill("#play-max-tokens", "40")
    page.fill("#play-prompt", "Tell me a story")
    with slow_engine(console_server, 0.03):
        page.click("#play-send")
        pid = int(
            eventually(
                lambda: page.text_content("#play-pid").strip().isdigit() and page.text_content("#play-pid")
            )
        )
        show(page, "processes")  # the playground's request, as it runs, in the process view
        page.wait_for_selector(f"#processes-table tr[data-key='{pid}']")
        assert by_key(page, "processes-table")[str(pid)]["app"] == "alpha"
        show(page, "playground")
        page.wait_for_selector("#play-output[data-done=true]", timeout=30_000)
    page.screenshot(path=str(screenshots / "playground.png"), full_page=True)
    process = api(console_server, f"/os/tasks/{pid}")
    assert (process["app"], process["state"], process["tokens_out"]) == ("alpha", "finished", 40)
    assert page.text_content("#play-state").startswith("finished:")  # its end, not its last snapshot
    assert page.text_content("#play-output")  # the streamed text
    assert page.errors == []


# ---- safe by construction ---------------------------------------------------------------------------


def test_the_key_stays_out_of_urls_storage_and_cookies_and_the_csp_holds(page, console_server, work):
    key = console_server.admin_key
    watches = [r["id"] for r in audit_rows(console_server, app="admin") if r["call"] == "overview.watch"]
    sign_in(page, key)  # "keep for this tab" unticked: the key lives in the page's memory only
    for view in VIEWS:
        show(page, view)
    fresh(page, 1)
    # each view followed its own stream, and the console's opening is one audit row, not one per view
    asked = [r.url.split("views=")[1].split("&")[0] for r in page.requests if "/os/console/stream" in r.url]
    assert asked == ["processes", *(VIEW_SECTIONS[v] for v in VIEWS[1:])]
    now = [r["id"] for r in audit_rows(console_server, app="admin") if r["call"] == "overview.watch"]
    assert len(now) == len(watches) + 1
    stored = page.evaluate(
        "() => [JSON.stringify(sessionStorage), JSON.stringify(localStorage), document.cookie, location.href]"
    )
    assert all(key not in s for s in stored)
    assert page.context.cookies() == []
    assert page.requests and all(key not in r.url for r in page.requests)
    api_calls = [r for r in page.requests if "/os/" in r.url or "/v1/" in r.url]
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {key}" for r in api_calls)
    assert all(r.url.startswith(console_server.url) for r in page.requests)  # nothing leaves the origin
    assert not [m for m in page.messages if "Content Security Policy" in m]
    # inline script is refused by the policy the page is served with
    page.evaluate(
        """() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';
                   document.body.append(s); }"""
    )
    assert page.evaluate("() => window.injected === undefined")
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.is_visible("#signin") and page.is_hidden("#console")  # the key did not survive a reload
    assert page.errors == []
