"""A third-party plugin package, written here and installed with pip, adds a service (`shout`, over the
chat system call) and a tool (`reverse`) that work through every door — HTTP, the SDK, the CLI,
function calling and `ask` routing — with capability checks and audit rows, and no edit to llmasos/.
A broken plugin installed beside it is reported, and the server starts all the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest

import llmasos
from llmasos.errors import PermissionDeniedError
from llmasos.programs import reload_plugins
from llmasos.sdk.discovery import write_server_file
from llmasos.security.audit import AuditLog
from tests.helpers.plugin_package import (
    BROKEN_PLUGIN,
    SHOUT_PLUGIN,
    add_to_path,
    pip_install,
    remove_from_path,
    write_wheel,
)

REPO = Path(__file__).resolve().parents[2]
MODULES = ("llmasos_test_shout", "llmasos_test_broken")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The two plugin packages pip-installed into a folder put on the path (kept out of the shared
    virtual environment, where every other test run would see them), for this module's tests."""
    folder = tmp_path_factory.mktemp("plugins")
    wheels = [
        write_wheel(
            folder,
            "llmasos-test-shout",
            "0.1.0",
            MODULES[0],
            SHOUT_PLUGIN,
            {"shout": f"{MODULES[0]}:register"},
        ),
        write_wheel(
            folder,
            "llmasos-test-broken",
            "0.2.0",
            MODULES[1],
            BROKEN_PLUGIN,
            {"broken": f"{MODULES[1]}:register"},
        ),
    ]
    site = folder / "site"
    pip_install(wheels, site)
    add_to_path(site)
    reload_plugins()
    try:
        yield site
    finally:
        remove_from_path(site, MODULES)
        reload_plugins()


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}"}
    return subprocess.run(
        [sys.executable, "-m", "llmasos.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plugins_are_listed_with_their_source_and_a_broken_one_is_reported(plugin_site, long_tiny_server):
    assert long_tiny_server.client().get("/healthz").json()["status"] == "ok"  # it started
    plugins = {p["name"]: p for p in long_tiny_server.client().get("/os/plugins").json()["plugins"]}
    shout = plugins["shout"]
    assert (shout["distribution"], shout["version"], shout["module"]) == (
        "llmasos-test-shout",
        "0.1.0",
        MODULES[0],
    )
    assert shout["programs"] == ["reverse", "shout"] and shout["error"] is None
    broken = plugins["broken"]
    assert broken["distribution"] == "llmasos-test-broken" and broken["programs"] == []
    assert "RuntimeError: this plugin is broken on purpose" in broken["error"]
    assert plugins["services"]["error"] is None and plugins["tools"]["error"] is None

    listed = _cli(plugin_site, "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    local = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert (
        local["shout"]["programs"] == ["reverse", "shout"] and "broken on purpose" in local["broken"]["error"]
    )
    text = _cli(plugin_site, "plugins", "list")
    assert "llmasos-test-shout 0.1.0" in text.stdout and "failed, skipped" in text.stdout


def test_the_plugin_programs_work_over_http_and_the_sdk_with_capabilities_and_audit(
    plugin_site, long_tiny_server
):
    client = long_tiny_server.client()
    r = client.post("/os/services/shout", json={"input": "hello", "model": "tiny"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"].startswith("HELLO") and body["output"] == body["output"].upper()
    assert body["usage"]["calls"] == 1 and body["usage"]["completion_tokens"] >= 1
    r = client.post("/os/services/reverse", json={"input": {"text": "stressed"}})
    assert r.status_code == 200 and r.json()["output"] == {"text": "desserts"}
    r = client.post("/os/services/reverse", json={"input": {"text": 7}})
    assert r.status_code == 400 and "field 'text'" in r.json()["error"]["message"]
    listing = {s["name"]: s for s in client.get("/os/services").json()["services"]}
    assert listing["reverse"]["kind"] == "tool" and listing["shout"]["capability"] == "service:shout"

    chat_only = long_tiny_server.new_app("chat-only", capabilities=("model:*", "service:chat"))
    narrow = long_tiny_server.client(chat_only)
    assert narrow.post("/os/services/shout", json={"input": "hi", "model": "tiny"}).status_code == 403
    assert narrow.post("/os/services/reverse", json={"input": {"text": "ab"}}).status_code == 403
    assert "reverse" not in [t["function"]["name"] for t in narrow.get("/os/tools").json()["tools"]]

    sdk = llmasos.Client(long_tiny_server.url, long_tiny_server.admin_key, model="tiny")
    assert sdk.call("shout", "hi", max_tokens=2).startswith("HI")
    assert sdk.call("reverse", {"text": "abc"}) == {"text": "cba"}
    with pytest.raises(PermissionDeniedError):
        llmasos.Client(long_tiny_server.url, chat_only, model="tiny").call("reverse", {"text": "x"})

    audit = AuditLog()
    ok = [r["call"] for r in audit.query(app="admin", outcome="ok")]
    assert ok.count("service.shout") == 2 and ok.count("tool.reverse") == 2
    denied = {r["call"] for r in audit.query(app="chat-only", outcome="denied")}
    assert denied == {"service.shout", "tool.reverse"}


def test_the_plugin_tool_is_offered_to_the_model_through_function_calling(plugin_site, long_tiny_server):
    server = long_tiny_server
    (reverse,) = [
        t for t in server.client().get("/os/tools").json()["tools"] if t["function"]["name"] == "reverse"
    ]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin_key, max_retries=0)
    ask = [{"role": "user", "content": "Please spell 'stressed' backwards."}]
    reply = client.chat.completions.create(
        model="tiny", messages=ask, tools=[reverse], tool_choice="required", seed=1
    )
    (call,) = reply.choices[0].message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "reverse"
    jsonschema.validate(arguments, reverse["function"]["parameters"])
    result = server.client().post("/os/services/reverse", json={"input": arguments}).json()["output"]
    assert result == {"text": arguments["text"][::-1]}
    history = [
        *ask,
        reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]
    answer = client.chat.completions.create(
        model="tiny", messages=history, tools=[reverse], tool_choice="none", max_tokens=4
    )
    assert answer.choices[0].message.content is not None


def test_the_cli_and_ask_routing_reach_the_plugin_programs(plugin_site, long_tiny_server):
    write_server_file(long_tiny_server.url)  # as `llmasos serve` does: the CLI finds this server
    shouted = _cli(plugin_site, "call", "shout", "hello", "-m", "tiny", "--param", "max_tokens=2")
    assert shouted.returncode == 0, shouted.stderr
    assert shouted.stdout.strip().startswith("HELLO")
    reversed_ = _cli(plugin_site, "call", "reverse", '{"text": "drawer"}', "--json")
    assert reversed_.returncode == 0, reversed_.stderr
    assert json.loads(reversed_.stdout)["output"] == {"text": "reward"}

    client = long_tiny_server.client()
    request = {
        "request": "Spell this backwards: 'stressed'",
        "model": "tiny",
        "use_model_for_close_calls": False,
    }
    routed = client.post("/os/ask", json=request)
    assert routed.status_code == 200, routed.text
    assert routed.json()["route"]["target"] == "reverse"
    assert routed.json()["steps"][0]["output"] == {"text": "desserts"}
    asked = _cli(plugin_site, "ask", "Shout this at me: good morning", "-m", "tiny", "--json")
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["route"]["target"] == "shout" and answer["answer"].startswith("GOOD MORNING")
    calls = [r["call"] for r in AuditLog().query(app="admin", outcome="ok")]
    assert calls.count("service.shout") == 2 and calls.count("tool.reverse") == 2  # the CLI's and ask's
