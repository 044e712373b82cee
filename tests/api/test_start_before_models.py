"""A starting server answers and resumes workflow runs before torch and its preloaded models are in
memory (issue 25: restart-to-progress). It imports no torch until a model loads; `/healthz` says
`loading` (503) while the preloads run, and steps that need no model go on meanwhile."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from fastapi.testclient import TestClient

from llmasos.api.app import create_app
from llmasos.api.preloading import Preloading
from llmasos.config import EngineConfig
from llmasos.kernel.boot import boot
from llmasos.kernel.kernel import KernelConfig
from llmasos.library.store import ModelStore
from llmasos.security.admin import ensure_admin

WAIT = 30.0

STARTS_WITHOUT_TORCH = """
import sys
from llmasos.api.app import create_app
from llmasos.api.server import serve
from llmasos.cli.main import app as cli
from llmasos.kernel.boot import boot
from llmasos.security.admin import ensure_admin

syscalls = boot(interface="http")
ensure_admin(syscalls.apps)
create_app(syscalls)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""

CALC_ONLY = {
    "name": "calc",
    "steps": {"c": {"kind": "tool", "name": "calculator", "input": {"expression": "6*7"}}},
    "output": "{{ steps.c.output.value }}",
}


def test_booting_a_server_imports_no_torch(llmasos_home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", STARTS_WITHOUT_TORCH], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # torch (seconds to import) waits for the first model


def test_the_server_answers_and_runs_steps_while_its_preloaded_model_loads(tiny_gguf: Path) -> None:
    ModelStore().pull(str(tiny_gguf), name="tiny", progress=False)
    syscalls = boot(KernelConfig(engine=EngineConfig(block_size=4, kv_cache_bytes=2**20)), 4 * 2**30)
    admin, key = ensure_admin(syscalls.apps)
    residency, release = syscalls.kernel.residency, threading.Event()
    load = residency._load

    def slow_load(name: str):
        assert release.wait(WAIT), "the test never let the model load"
        return load(name)

    residency._load = slow_load  # a big model on a busy disk
    app = create_app(syscalls)
    app.state.preloading = preloading = Preloading(syscalls, admin, ("tiny",))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        preloading.start()
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "loading" and health.json()["loading_models"] == ["tiny"]
        run = client.post("/os/workflows/runs", json={"spec": CALC_ONLY, "wait": True})
        assert run.status_code == 201 and run.json()["output"] == 42  # no model needed, no waiting for one

        release.set()
        assert preloading.wait(WAIT)
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["resident_models"] == ["tiny"]
        assert syscalls.kernel.residency.models["tiny"].held  # kept, as --preload keeps it
    syscalls.close()
