"""A head restart, with real processes: `llmasos serve --cluster` is stopped and started again; the node
that `llmasos node start` joined rejoins by itself, and nothing acknowledged is lost (the app and its
key, the audit row of the answer it got). The model is in the node's library only: the head does not
hold it. Marker cluster_slow: a minute or two, not in `make test`
(`pytest -m cluster_slow tests/cluster/test_head_restart.py`)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmasos.library.store import ModelStore
from tests.helpers.served import environment, start_serve

pytestmark = pytest.mark.cluster_slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_health(url: str, admin: str) -> dict:
    try:
        listed = httpx.get(f"{url}/os/nodes", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        return {n["name"]: n for n in listed.json()["nodes"]}
    except (httpx.HTTPError, ValueError, KeyError):
        return {}


def wait_until_healthy(url: str, admin: str, node: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_health(url, admin).get(node, {}).get("healthy"):
            return
        time.sleep(1.0)
    raise AssertionError(f"node {node} did not join {url} within {timeout:.0f} s: {node_health(url, admin)}")


def complete(url: str, key: str) -> httpx.Response:
    body = {"model": "tiny", "prompt": "hello there", "max_tokens": 4, "temperature": 0}
    return httpx.post(
        f"{url}/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


def test_a_restarted_head_gets_its_node_back_and_keeps_what_it_acknowledged(
    tiny_gguf: Path, llmasos_home: Path
) -> None:
    node_home = llmasos_home.parent / "node-home"
    ModelStore(node_home / "models").pull(str(tiny_gguf), name="tiny", progress=False)
    port, ray_port = free_port(), free_port()
    head = ("--cluster", "--cluster-port", str(ray_port))
    served = start_serve(llmasos_home, port, *head)
    (node_home / "cluster_secret").write_text((llmasos_home / "cluster_secret").read_text())
    (node_home / "cluster_secret").chmod(0o600)  # as an operator copies it to the node
    node_log = llmasos_home.parent / "node.log"
    command = [
        sys.executable,
        "-m",
        "llmasos.cli.main",
        "node",
        "start",
        "--address",
        f"127.0.0.1:{ray_port}",
    ]
    with open(node_log, "wb") as out:
        node = subprocess.Popen(
            [*command, "--name", "n1", "--models", "tiny"],
            env=environment(node_home),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        admin = (llmasos_home / "admin.key").read_text().strip()
        wait_until_healthy(served.url, admin, "n1")
        created = httpx.post(
            f"{served.url}/os/apps", json={"name": "keeper"}, headers={"Authorization": f"Bearer {admin}"}
        )
        key = created.json()["api_key"]
        before = complete(served.url, key)
        assert before.status_code == 200, before.text  # acknowledged

        served.stop()
        served = start_serve(llmasos_home, port, *head)
        wait_until_healthy(served.url, admin, "n1")  # the node came back by itself
        after = complete(served.url, key)  # the app and its key survived the restart
        assert after.status_code == 200, after.text
        assert after.json()["choices"][0]["text"] == before.json()["choices"][0]["text"]
        audit = httpx.get(
            f"{served.url}/os/audit",
            params={"app": "keeper"},
            headers={"Authorization": f"Bearer {admin}"},
        ).json()["rows"]
        assert sum(1 for row in audit if "tiny" in str(row.get("target", ""))) >= 2, audit
        assert node.poll() is None, node_log.read_text(errors="replace")  # one node start all along
    finally:
        node.terminate()
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
        served.stop()
