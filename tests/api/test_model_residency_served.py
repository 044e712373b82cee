"""Loading, unloading and keep-alive on a real `llmasos serve` process, over HTTP (`/os/models/...`,
Ollama's `keep_alive`) and from the CLI (`llmasos models load/unload`, `llmasos ps`), with its settings
from config.toml and its flags."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmasos.library import ModelStore
from llmasos.security.admin import read_admin_key
from tests.api.conftest import free_port
from tests.helpers.served import Served, run_llmasos, start_serve
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf

CONFIG = """\
[models]
keep_alive = "1h"

[engine]
kv_cache_bytes = "1MiB"

[services]
summarize = "tiny-long"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[Served]:
    """A server that preloads the tiny model (flag), keeps idle models an hour and runs `summarize` on a
    second tiny model, `tiny-long` (config.toml). The default model is not in its library."""
    base = tmp_path_factory.mktemp("residency")
    home = base / "home"
    long_path, _ = write_tiny_gguf(base / "tiny-long.gguf", TinySpec(context=2048, seed=1))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMASOS_HOME", str(home))
        ModelStore().pull(str(tiny_gguf), name="tiny", progress=False)
        ModelStore().pull(str(long_path), name="tiny-long", progress=False)
    (home / "config.toml").write_text(CONFIG)
    server = start_serve(home, free_port(), "--preload", "tiny")
    yield server
    server.stop()


@pytest.fixture
def admin(served: Served, monkeypatch: pytest.MonkeyPatch) -> httpx.Client:
    monkeypatch.setenv("LLMASOS_HOME", str(served.home))
    headers = {"Authorization": f"Bearer {read_admin_key()}"}
    with httpx.Client(base_url=served.url, headers=headers, timeout=60) as client:
        yield client


def loaded(client: httpx.Client) -> dict[str, dict]:
    response = client.get("/os/models/loaded")
    assert response.status_code == 200, response.text
    return {m["name"]: m for m in response.json()["models"]}


def wait_until_unloaded(client: httpx.Client, name: str, within: float = 30.0) -> float:
    started = time.monotonic()
    while name in loaded(client):
        assert time.monotonic() - started < within, f"{name} still loaded after {within} s"
        time.sleep(0.2)
    return time.monotonic() - started


def test_a_preloaded_model_is_held_then_unloaded_and_loaded_over_http(admin) -> None:
    tiny = loaded(admin)["tiny"]
    assert tiny["held"] and tiny["expires_in_seconds"] is None and tiny["memory_bytes"] > 0
    assert admin.post("/os/models/tiny/unload").json() == {
        "model": "tiny",
        "unloaded": True,
        "pending": False,
    }
    assert loaded(admin) == {}
    assert admin.post("/os/models/tiny/unload").status_code == 404  # not loaded
    answer = admin.post("/os/models/tiny/load", json={"keep_alive": "10m"}).json()
    assert (
        answer["loaded"] and answer["keep_alive_seconds"] == 600 and 590 < answer["expires_in_seconds"] <= 600
    )
    assert loaded(admin)["tiny"]["keep_alive_seconds"] == 600
    assert admin.post("/os/models/default/unload").status_code == 404  # not in this library


def test_bad_requests_and_apps_without_admin_are_refused(admin) -> None:
    bad = admin.post("/os/models/tiny/load", json={"keep_alive": "soon"})
    assert bad.status_code == 400 and "keep_alive" in bad.json()["error"]["message"]
    assert admin.post("/os/models/tiny/load", json={"keep": 1}).status_code == 422
    assert admin.post("/os/models/nothing-here/load").status_code == 404
    key = admin.post("/os/apps", json={"name": "residency-user"}).json()["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert admin.post("/os/models/tiny/load", headers=headers).status_code == 403
    assert admin.post("/os/models/tiny/unload", headers=headers).status_code == 403
    assert admin.get("/os/models/loaded", headers=headers).status_code == 200


def test_a_short_keep_alive_expires_and_ollama_keep_alive_zero_unloads_after_the_answer(admin) -> None:
    admin.post("/os/models/tiny/load", json={"keep_alive": 1})
    assert wait_until_unloaded(admin, "tiny") < 10
    body = {
        "model": "tiny",
        "prompt": "Hello",
        "stream": False,
        "keep_alive": 0,
        "options": {"num_predict": 2},
    }
    answer = admin.post("/api/generate", json=body)
    assert answer.status_code == 200 and answer.json()["done"]
    wait_until_unloaded(admin, "tiny", within=10)
    chat = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        "keep_alive": "-1",
    }
    assert admin.post("/v1/chat/completions", json=chat).status_code == 200
    assert loaded(admin)["tiny"]["expires_in_seconds"] is None  # the OpenAI extra field kept it forever
    assert admin.get("/api/ps").json()["models"][0]["expires_at"] > "2200"  # Ollama's "never": a far date
    empty = {"model": "tiny", "prompt": "", "keep_alive": 0, "stream": False}
    assert admin.post("/api/generate", json=empty).json()["done_reason"] == "unload"
    wait_until_unloaded(admin, "tiny", within=10)


def test_models_load_unload_and_ps_from_the_cli_are_audited(served, admin) -> None:
    result, _ = run_llmasos(served.home, "models", "load", "tiny", "--keep-alive", "-1")
    assert result.returncode == 0, result.stderr
    assert "loaded tiny" in result.stdout and "kept until unloaded" in result.stdout
    result, _ = run_llmasos(served.home, "ps")
    assert result.returncode == 0 and "tiny" in result.stdout and "kept until unloaded" in result.stdout
    result, _ = run_llmasos(served.home, "ps", "--models", "--json")
    models = json.loads(result.stdout)["models"]
    assert [m["name"] for m in models] == ["tiny"] and models[0]["keep_alive_seconds"] == -1
    result, _ = run_llmasos(served.home, "models", "unload", "tiny")
    assert result.returncode == 0 and "unloaded tiny" in result.stdout and loaded(admin) == {}
    result, _ = run_llmasos(served.home, "models", "unload", "tiny")
    assert result.returncode == 1 and "not loaded" in result.stderr
    result, _ = run_llmasos(served.home, "audit", "--json")
    calls = [(row["call"], row["outcome"]) for row in json.loads(result.stdout)]
    assert ("models.load", "ok") in calls and ("models.unload", "ok") in calls
    assert ("models.unload", "error") in calls
    result, _ = run_llmasos(served.home, "audit", "--denied", "--json")
    assert ("residency-user", "models.load") in [
        (row["app"], row["call"]) for row in json.loads(result.stdout)
    ]


def test_load_without_a_server_says_how_to_start_one(tmp_path) -> None:
    result, _ = run_llmasos(tmp_path / "home", "models", "load", "tiny")
    assert result.returncode == 1 and "llmasos serve" in result.stderr


def test_a_service_runs_on_the_model_the_configuration_names_for_it(admin) -> None:
    call = {
        "input": "The telescope sees infrared light from the first galaxies.",
        "params": {"length": "short"},
    }
    answer = admin.post("/os/services/summarize", json=call)
    assert answer.status_code == 200, answer.text
    processes = admin.get("/os/ps").json()["processes"]
    assert {p["model"] for p in processes if p["app"] == "admin"} >= {"tiny-long"}
    assert "tiny-long" in loaded(admin)
    # A service with no model configured takes the default model, which this library does not hold.
    fallback = admin.post("/os/services/translate", json={"input": "Hello", "params": {"target": "French"}})
    assert (
        fallback.status_code == 404
        and "the default model is not installed" in fallback.json()["error"]["message"]
    )
