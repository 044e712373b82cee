"""The console's Nodes view in a real Chromium against the session's Ray cluster (`tiny_cluster`):
a live server whose kernel places work on the cluster's nodes, the page signed in as the admin,
each node's liveness, health (with the reason a model did not load), capabilities, models and
live processes as `/os/nodes` and `/metrics` report them at the same moment.

The kernel is ticked by the test (the server does not run it), so a process stays placed and
running on its node while the page and the API are read. It removes no node, and joins nodes `a`
and `b` again if a test that ran before it removed them (test_cluster.py's failover tests do).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from llmasos.engine.sampling import SamplingParams
from llmasos.security.admin import ensure_admin
from llmasos.security.apps import App
from tests.api.conftest import LiveServer, free_port
from tests.console.conftest import SCREENSHOTS
from tests.console.test_console_browser import api, by_key, show, sign_in
from tests.helpers.browser import chromium, console_page
from tests.helpers.engines import random_prompts

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster_server(tiny_cluster) -> Iterator[LiveServer]:
    """uvicorn over a kernel whose engines are the cluster's; the kernel is not started."""
    import uvicorn

    from llmasos.api.app import create_app
    from llmasos.cluster.runtime import cluster_loader
    from llmasos.kernel.boot import boot
    from llmasos.library.store import ModelStore

    tiny_cluster.ensure_nodes()
    ModelStore().pull(str(tiny_cluster.model_path), name="tiny", progress=False)  # names the apps may ask for
    syscalls = boot(interface="http", engines=cluster_loader(tiny_cluster.directory))
    syscalls.cluster_nodes = lambda: [node.as_dict() for node in tiny_cluster.directory.nodes()]
    _, key = ensure_admin(syscalls.apps)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(syscalls, manage_kernel=False), host="127.0.0.1", port=free_port(), log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{server.config.port}", key, syscalls, "tiny")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        syscalls.close()


def test_the_nodes_view_shows_what_os_nodes_and_metrics_report(cluster_server: LiveServer) -> None:
    syscalls = cluster_server.syscalls
    app = syscalls.apps.create(App("edge"))
    pid = syscalls.generate(app, "tiny", random_prompts([6], seed=2)[0], SamplingParams(max_tokens=24)).pid
    syscalls.kernel.tick()  # placed on a node and running; nothing moves until the next tick
    node = syscalls.kernel.table[pid].node
    with chromium() as browser:
        page = console_page(browser, cluster_server.url)
        sign_in(page, cluster_server.admin_key)
        show(page, "nodes")
        listed = {n["name"]: n for n in api(cluster_server, "/os/nodes")["nodes"]}
        shown = by_key(page, "nodes-table")
        page.screenshot(path=str(SCREENSHOTS / "nodes.png"), full_page=True)
        assert page.is_hidden("#nodes-empty") and set(shown) == set(listed) >= {"a", "b"}
        for name, n in listed.items():
            row = shown[name]
            assert row["alive"] == ("yes" if n["alive"] else "no")
            assert row["healthy"] == ("healthy" if n["healthy"] else f"unhealthy: {n['reason']}")
            assert row["capabilities"] == ", ".join(n["capabilities"])
            assert row["processes"] == str(n["processes"])
            models = [m if h["healthy"] else f"{m} (unhealthy)" for m, h in n["models"].items()]
            assert row["models"] == ", ".join(models)
        assert shown[node]["processes"] == "1" and "vision" in shown["b"]["capabilities"]
        assert "could not be loaded" in shown["a"]["healthy"] and shown["a"]["_class"] == "unhealthy"
        with cluster_server.client() as admin:
            metrics = admin.get("/metrics").text
        assert f'llmasos_node_processes{{node="{node}"}} 1.0' in metrics
        show(page, "processes")  # the process, on its node
        assert by_key(page, "processes-table")[str(pid)]["node"] == node
        assert page.errors == []
        page.context.close()
    syscalls.cancel(app, pid)
    syscalls.kernel.tick()
