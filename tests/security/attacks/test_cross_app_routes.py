"""Every route, called as another app would (docs/THREAT_MODEL.md, boundary B1: client -> server).

The routes are enumerated from the FastAPI app itself, and each must be classified below: a route
added without a class fails `test_every_route_is_classified`, so a new endpoint is attacked the day
it appears. The classes:
- PUBLIC: answers without a key (liveness, the API's description);
- ADMIN: another app's key is refused 403;
- OWNED: it names a resource of one app (a process, file, store, run, key, workflow): another app's
  key with the owner's ids is answered 404 (or 403) and the resource is left as it was;
- CALLER: it acts on the caller's own state: another app's answer never holds the owner's ids or data
  (STREAM: the same, for a route that streams until the client leaves; its first bytes are read).
Every route but the public ones answers 401 without a key. None answers 500.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import pytest

from tests.api.conftest import LiveServer

PUBLIC, ADMIN, OWNED, CALLER = "public", "admin", "owned", "caller"
STREAM = "stream"  # a CALLER route that streams until the client leaves: its first bytes are read
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
GATE = {
    "name": "alpha-gate",
    "steps": {
        "ok": {"kind": "wait"},
        "calc": {"kind": "tool", "name": "calculator", "needs": ["ok"], "input": {"expression": "1 + 1"}},
    },
    "output": "{{ steps.calc.output.value }}",
}
SECRETS = ("alpha-secret-file", "alpha-secret-kv", "alpha-secret-turn")

#: (method, route path) -> (class, the path as called, with the owner's ids, and a JSON body or None).
ROUTES: dict[tuple[str, str], tuple[str, str, dict | None]] = {
    ("GET", "/openapi.json"): (PUBLIC, "/openapi.json", None),
    ("GET", "/docs"): (PUBLIC, "/docs", None),
    ("GET", "/docs/oauth2-redirect"): (PUBLIC, "/docs/oauth2-redirect", None),
    ("GET", "/redoc"): (PUBLIC, "/redoc", None),
    ("GET", "/healthz"): (PUBLIC, "/healthz", None),
    ("GET", "/api/version"): (PUBLIC, "/api/version", None),
    # OpenAI
    ("GET", "/v1/models"): (CALLER, "/v1/models", None),
    ("GET", "/v1/models/{model_id:path}"): (CALLER, "/v1/models/tiny", None),
    ("POST", "/v1/chat/completions"): (CALLER, "/v1/chat/completions", CHAT),
    ("POST", "/v1/completions"): (
        CALLER,
        "/v1/completions",
        {"model": "tiny", "prompt": "hi", "max_tokens": 2},
    ),
    ("POST", "/v1/embeddings"): (CALLER, "/v1/embeddings", {"model": "tiny", "input": "hi"}),
    # the OS
    ("GET", "/os/ps"): (CALLER, "/os/ps", None),
    ("GET", "/os/tasks/{pid}"): (OWNED, "/os/tasks/{pid}", None),
    ("DELETE", "/os/tasks/{pid}"): (OWNED, "/os/tasks/{pid}", None),
    ("GET", "/os/apps"): (CALLER, "/os/apps", None),
    ("POST", "/os/apps"): (ADMIN, "/os/apps", {"name": "evil", "capabilities": ["admin"]}),
    ("GET", "/os/apps/{name}"): (OWNED, "/os/apps/alpha", None),
    ("DELETE", "/os/apps/{name}"): (ADMIN, "/os/apps/alpha", None),
    ("DELETE", "/os/apps/{name}/keys"): (ADMIN, "/os/apps/alpha/keys", None),
    ("GET", "/os/models"): (CALLER, "/os/models", None),
    ("GET", "/os/services"): (CALLER, "/os/services", None),
    ("GET", "/os/tools"): (CALLER, "/os/tools", None),
    ("GET", "/os/plugins"): (CALLER, "/os/plugins", None),
    ("POST", "/os/services/{name}"): (
        CALLER,
        "/os/services/classify",
        {"input": "hi", "params": {"labels": ["a", "b"], "max_tokens": 2}},
    ),
    ("POST", "/os/ask"): (CALLER, "/os/ask", {}),  # routing loads a sentence model: shape only here
    ("POST", "/os/voice"): (CALLER, "/os/voice", {}),
    ("GET", "/os/models/loaded"): (CALLER, "/os/models/loaded", None),  # those it may use
    ("POST", "/os/models/{name}/load"): (ADMIN, "/os/models/tiny/load", {}),
    ("POST", "/os/models/{name}/unload"): (ADMIN, "/os/models/tiny/unload", {}),
    ("GET", "/metrics"): (ADMIN, "/metrics", None),
    # Ollama
    ("GET", "/api/tags"): (CALLER, "/api/tags", None),
    ("POST", "/api/show"): (CALLER, "/api/show", {"model": "tiny"}),
    ("GET", "/api/ps"): (CALLER, "/api/ps", None),
    ("POST", "/api/pull"): (ADMIN, "/api/pull", {"model": "evil", "stream": False}),
    ("POST", "/api/chat"): (CALLER, "/api/chat", {**CHAT, "stream": False, "options": {"num_predict": 2}}),
    ("POST", "/api/generate"): (
        CALLER,
        "/api/generate",
        {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
    ),
    ("POST", "/api/embed"): (CALLER, "/api/embed", {"model": "tiny", "input": "hi"}),
    ("POST", "/api/embeddings"): (CALLER, "/api/embeddings", {"model": "tiny", "prompt": "hi"}),
    # workflows
    ("POST", "/os/workflows/validate"): (CALLER, "/os/workflows/validate", {"spec": GATE}),
    ("POST", "/os/workflows"): (CALLER, "/os/workflows", {"spec": {**GATE, "steps": {}}}),
    ("GET", "/os/workflows"): (CALLER, "/os/workflows", None),
    ("POST", "/os/workflows/runs"): (OWNED, "/os/workflows/runs", {"workflow": "alpha-gate"}),
    ("GET", "/os/workflows/runs"): (CALLER, "/os/workflows/runs", None),
    ("GET", "/os/workflows/runs/{run_id}"): (OWNED, "/os/workflows/runs/{run_id}", None),
    ("DELETE", "/os/workflows/runs/{run_id}"): (OWNED, "/os/workflows/runs/{run_id}", None),
    ("POST", "/os/workflows/runs/{run_id}/approve"): (
        OWNED,
        "/os/workflows/runs/{run_id}/approve",
        {"step": "ok"},
    ),
    ("POST", "/os/workflows/runs/{run_id}/resume"): (OWNED, "/os/workflows/runs/{run_id}/resume", {}),
    ("GET", "/os/workflows/runs/{run_id}/events"): (OWNED, "/os/workflows/runs/{run_id}/events", None),
    ("GET", "/os/workflows/runs/{run_id}/graph"): (OWNED, "/os/workflows/runs/{run_id}/graph", None),
    ("GET", "/os/workflows/{name}/graph"): (OWNED, "/os/workflows/alpha-gate/graph", None),
    # files and vector stores
    ("POST", "/v1/files"): (CALLER, "/v1/files", None),
    ("GET", "/v1/files"): (CALLER, "/v1/files", None),
    ("GET", "/v1/files/{file_id}"): (OWNED, "/v1/files/{file_id}", None),
    ("GET", "/v1/files/{file_id}/content"): (OWNED, "/v1/files/{file_id}/content", None),
    ("DELETE", "/v1/files/{file_id}"): (OWNED, "/v1/files/{file_id}", None),
    ("POST", "/v1/vector_stores"): (CALLER, "/v1/vector_stores", {"name": "mine"}),
    ("GET", "/v1/vector_stores"): (CALLER, "/v1/vector_stores", None),
    ("GET", "/v1/vector_stores/{store_id}"): (OWNED, "/v1/vector_stores/{store_id}", None),
    ("POST", "/v1/vector_stores/{store_id}"): (OWNED, "/v1/vector_stores/{store_id}", {"name": "taken"}),
    ("DELETE", "/v1/vector_stores/{store_id}"): (OWNED, "/v1/vector_stores/{store_id}", None),
    ("POST", "/v1/vector_stores/{store_id}/files"): (
        OWNED,
        "/v1/vector_stores/{store_id}/files",
        {"file_id": "{file_id}"},
    ),
    ("GET", "/v1/vector_stores/{store_id}/files"): (OWNED, "/v1/vector_stores/{store_id}/files", None),
    ("GET", "/v1/vector_stores/{store_id}/files/{file_id}"): (
        OWNED,
        "/v1/vector_stores/{store_id}/files/{file_id}",
        None,
    ),
    ("POST", "/v1/vector_stores/{store_id}/files/{file_id}"): (
        OWNED,
        "/v1/vector_stores/{store_id}/files/{file_id}",
        {"attributes": {"x": "1"}},
    ),
    ("DELETE", "/v1/vector_stores/{store_id}/files/{file_id}"): (
        OWNED,
        "/v1/vector_stores/{store_id}/files/{file_id}",
        None,
    ),
    ("GET", "/v1/vector_stores/{store_id}/files/{file_id}/content"): (
        OWNED,
        "/v1/vector_stores/{store_id}/files/{file_id}/content",
        None,
    ),
    ("POST", "/v1/vector_stores/{store_id}/file_batches"): (
        OWNED,
        "/v1/vector_stores/{store_id}/file_batches",
        {"file_ids": ["{file_id}"]},
    ),
    ("GET", "/v1/vector_stores/{store_id}/file_batches/{batch_id}"): (
        OWNED,
        "/v1/vector_stores/{store_id}/file_batches/{batch_id}",
        None,
    ),
    ("POST", "/v1/vector_stores/{store_id}/file_batches/{batch_id}/cancel"): (
        OWNED,
        "/v1/vector_stores/{store_id}/file_batches/{batch_id}/cancel",
        {},
    ),
    ("GET", "/v1/vector_stores/{store_id}/file_batches/{batch_id}/files"): (
        OWNED,
        "/v1/vector_stores/{store_id}/file_batches/{batch_id}/files",
        None,
    ),
    ("POST", "/v1/vector_stores/{store_id}/search"): (
        OWNED,
        "/v1/vector_stores/{store_id}/search",
        {"query": "secret"},
    ),
    ("POST", "/os/vector_stores/{store_id}/search"): (
        OWNED,
        "/os/vector_stores/{store_id}/search",
        {"query": "secret"},
    ),
    # key-value store and data usage
    ("GET", "/os/kv"): (CALLER, "/os/kv", None),
    ("GET", "/os/kv/{key:path}"): (OWNED, "/os/kv/alpha-key", None),
    ("PUT", "/os/kv/{key:path}"): (CALLER, "/os/kv/alpha-key", {"value": "overwritten"}),
    ("DELETE", "/os/kv/{key:path}"): (OWNED, "/os/kv/alpha-key", None),
    ("GET", "/os/apps/{name}/data"): (OWNED, "/os/apps/alpha/data", None),
    ("GET", "/os/apps/{name}/data/inventory"): (OWNED, "/os/apps/alpha/data/inventory", None),
    ("GET", "/os/apps/{name}/export"): (OWNED, "/os/apps/alpha/export", None),
    ("PUT", "/os/apps/{name}/data/quota"): (ADMIN, "/os/apps/alpha/data/quota", {"max_bytes": 1}),
    # the cluster, privacy, statistics, the console, responses and conversations
    ("GET", "/ui"): (PUBLIC, "/ui", None),  # the console's page and assets: it signs in with a key
    ("GET", "/ui/{path:path}"): (PUBLIC, "/ui/index.html", None),
    ("GET", "/os/nodes"): (ADMIN, "/os/nodes", None),
    ("POST", "/os/pii/analyze"): (CALLER, "/os/pii/analyze", {"text": "hi"}),
    ("GET", "/os/stats"): (CALLER, "/os/stats", None),
    ("PUT", "/os/stats/budgets/{name}"): (ADMIN, "/os/stats/budgets/alpha", {"epsilon": 1.0}),
    ("PATCH", "/os/apps/{name}"): (ADMIN, "/os/apps/alpha", {"priority": "realtime"}),
    ("POST", "/os/apps/{name}/keys"): (ADMIN, "/os/apps/alpha/keys", {}),
    ("GET", "/os/audit"): (CALLER, "/os/audit", None),
    ("GET", "/os/console/overview"): (CALLER, "/os/console/overview", None),
    ("GET", "/os/console/stream"): (STREAM, "/os/console/stream", None),
    ("POST", "/v1/responses"): (
        CALLER,
        "/v1/responses",
        {"model": "tiny", "input": "hi", "max_output_tokens": 2},
    ),
    ("GET", "/v1/responses/{response_id}"): (OWNED, "/v1/responses/{response_id}", None),
    ("DELETE", "/v1/responses/{response_id}"): (OWNED, "/v1/responses/{response_id}", None),
    ("GET", "/v1/responses/{response_id}/input_items"): (
        OWNED,
        "/v1/responses/{response_id}/input_items",
        None,
    ),
    ("GET", "/os/responses/{response_id}/context"): (OWNED, "/os/responses/{response_id}/context", None),
    ("POST", "/v1/conversations"): (CALLER, "/v1/conversations", {}),
    ("GET", "/v1/conversations/{conversation_id}"): (OWNED, "/v1/conversations/{conversation_id}", None),
    ("POST", "/v1/conversations/{conversation_id}"): (
        OWNED,
        "/v1/conversations/{conversation_id}",
        {"metadata": {}},
    ),
    ("DELETE", "/v1/conversations/{conversation_id}"): (OWNED, "/v1/conversations/{conversation_id}", None),
    ("POST", "/v1/conversations/{conversation_id}/items"): (
        OWNED,
        "/v1/conversations/{conversation_id}/items",
        {"items": [{"type": "message", "role": "user", "content": "beta was here"}]},
    ),
    ("GET", "/v1/conversations/{conversation_id}/items"): (
        OWNED,
        "/v1/conversations/{conversation_id}/items",
        None,
    ),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): (
        OWNED,
        "/v1/conversations/{conversation_id}/items/{item_id}",
        None,
    ),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): (
        OWNED,
        "/v1/conversations/{conversation_id}/items/{item_id}",
        None,
    ),
}


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route the FastAPI app serves, included routers and mounts too."""
    found: set[tuple[str, str]] = set()

    def walk(routes, prefix: str) -> None:
        for route in routes:
            if hasattr(route, "original_router"):  # an included router (FastAPI >= 0.16x)
                walk(route.original_router.routes, prefix + (route.include_context.prefix or ""))
            elif hasattr(route, "methods") and route.methods:
                found.update((m, prefix + route.path) for m in route.methods if m != "HEAD")
            elif hasattr(route, "routes"):  # a Mount: classified by its path with method "*"
                found.add(("*", prefix + route.path))
            else:
                found.add(("*", prefix + getattr(route, "path", repr(route))))

    walk(app.routes, "")
    return found


def served_routes() -> set[tuple[str, str]]:
    """The routes `llmasos serve` serves: the same app built over a kernel without models."""
    from llmasos.api.app import create_app
    from tests.helpers.programs import syscalls_without_models

    return app_routes(create_app(syscalls_without_models()))


def test_every_route_is_classified() -> None:
    served = served_routes()
    missing = sorted(served - ROUTES.keys())
    assert not missing, (
        f"routes with no class in {__file__}: {missing}; classify each (PUBLIC, ADMIN, OWNED, CALLER) "
        "with the path and body an attacker would send"
    )
    assert not sorted(ROUTES.keys() - served), "classified routes that no longer exist: remove them"


@dataclass
class Owned:
    """What app `alpha` holds, for `beta` to go after."""

    pid: int
    file_id: str
    store_id: str
    batch_id: str
    run_id: str
    conversation_id: str
    item_id: str
    response_id: str

    def fill(self, text: str) -> str:
        return text.format(**vars(self))

    def ids(self) -> tuple[str, ...]:
        return (
            self.file_id,
            self.store_id,
            self.batch_id,
            self.run_id,
            self.conversation_id,
            self.item_id,
            self.response_id,
        )


def _fill_body(body, owned: Owned):
    if isinstance(body, dict):
        return {k: _fill_body(v, owned) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill_body(v, owned) for v in body]
    return owned.fill(body) if isinstance(body, str) and "{" in body else body


def _alpha_holds(http: httpx.Client) -> Owned:
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
    process = next(p for p in http.get("/os/ps").json()["processes"] if p["app"] == "alpha")
    file = http.post(
        "/v1/files", files={"file": ("notes.txt", SECRETS[0].encode())}, data={"purpose": "assistants"}
    )
    file_id = file.json()["id"]
    store_id = http.post("/v1/vector_stores", json={"name": "alpha-store"}).json()["id"]
    batch = http.post(f"/v1/vector_stores/{store_id}/file_batches", json={"file_ids": [file_id]}).json()
    assert http.put("/os/kv/alpha-key", json={"value": SECRETS[1]}).status_code == 200
    assert http.post("/os/workflows", json={"spec": GATE}).status_code == 201
    run = http.post(
        "/os/workflows/runs", json={"workflow": "alpha-gate", "wait": True, "timeout_s": 10}
    ).json()
    assert run["status"] == "waiting", run
    conversation = http.post(
        "/v1/conversations", json={"items": [{"type": "message", "role": "user", "content": SECRETS[2]}]}
    ).json()
    item_id = http.get(f"/v1/conversations/{conversation['id']}/items").json()["data"][0]["id"]
    response = http.post(
        "/v1/responses",
        json={"model": "tiny", "input": "hi", "max_output_tokens": 2, "conversation": conversation["id"]},
    ).json()
    return Owned(
        process["pid"], file_id, store_id, batch["id"], run["id"], conversation["id"], item_id, response["id"]
    )


def _still_intact(http: httpx.Client, owned: Owned) -> None:
    assert http.get(f"/v1/files/{owned.file_id}/content").content == SECRETS[0].encode()
    assert http.get(f"/v1/vector_stores/{owned.store_id}").json()["name"] == "alpha-store"
    assert http.get(f"/v1/vector_stores/{owned.store_id}/files/{owned.file_id}").status_code == 200
    assert http.get("/os/kv/alpha-key").json()["value"] == SECRETS[1]
    assert http.get(f"/os/workflows/runs/{owned.run_id}").json()["status"] == "waiting"
    assert http.get(f"/os/tasks/{owned.pid}").status_code == 200
    items = http.get(f"/v1/conversations/{owned.conversation_id}/items").json()["data"]
    assert owned.item_id in [i["id"] for i in items] and "beta was here" not in str(items)
    assert http.get(f"/v1/responses/{owned.response_id}").status_code == 200


def test_another_apps_key_reaches_nothing_of_alpha(server: LiveServer) -> None:
    alpha = server.client(server.new_app("alpha"))
    beta = server.client(server.new_app("beta"))
    nobody = server.client("")
    with alpha, beta, nobody:
        owned = _alpha_holds(alpha)
        wrong: list[str] = []
        sent = ""
        for (method, route), (kind, path, body) in sorted(ROUTES.items()):
            url, payload = owned.fill(path), _fill_body(body, owned)
            answer = nobody.request(method, url, json=payload)
            if kind == PUBLIC:
                if answer.status_code >= 400:
                    wrong.append(f"{method} {route} without a key: {answer.status_code}")
                continue
            if answer.status_code not in (401, 429):  # 429: the failed-authentication lockout
                wrong.append(f"{method} {route} without a key: {answer.status_code}, not 401")
            if kind == STREAM:
                with beta.stream(method, url) as streamed:
                    status, text = streamed.status_code, next(streamed.iter_text(), "")
                answer = httpx.Response(status, text=text)
            else:
                answer = beta.request(method, url, json=payload)
            text = answer.text
            if answer.status_code >= 500:
                wrong.append(f"{method} {route} as beta: {answer.status_code} {text[:200]}")
            elif kind == ADMIN and answer.status_code != 403:
                wrong.append(f"{method} {route} as beta: {answer.status_code}, not 403")
            elif kind == OWNED and answer.status_code not in (403, 404):
                wrong.append(f"{method} {route} with alpha's ids as beta: {answer.status_code}, not 404")
            # An answer may name what beta itself sent, now or before (its own audit rows do); nothing more.
            sent += url + str(payload)
            leaked = [s for s in (*owned.ids(), *SECRETS) if s in text and s not in sent]
            if leaked:
                wrong.append(f"{method} {route} as beta shows alpha's {leaked}")
        assert not wrong, "\n".join(wrong)
        assert owned.pid not in [p["pid"] for p in beta.get("/os/ps").json()["processes"]]
        _still_intact(alpha, owned)


def test_another_apps_file_cannot_be_attached_to_ones_own_store(server: LiveServer) -> None:
    alpha = server.client(server.new_app("alpha"))
    beta = server.client(server.new_app("beta"))
    with alpha, beta:
        file = alpha.post(
            "/v1/files", files={"file": ("a.txt", SECRETS[0].encode())}, data={"purpose": "assistants"}
        )
        mine = beta.post("/v1/vector_stores", json={"name": "mine"}).json()["id"]
        attached = beta.post(f"/v1/vector_stores/{mine}/files", json={"file_id": file.json()["id"]})
        assert attached.status_code == 404, attached.text
        batch = beta.post(f"/v1/vector_stores/{mine}/file_batches", json={"file_ids": [file.json()["id"]]})
        assert batch.status_code == 404, batch.text
        time.sleep(0.1)
        found = beta.post(f"/v1/vector_stores/{mine}/search", json={"query": "alpha secret file"}).json()
        assert SECRETS[0] not in str(found)


@pytest.mark.parametrize("alias", ["admin", "anonymous"])
def test_reserved_names_cannot_be_taken_to_become_someone_else(server: LiveServer, alias: str) -> None:
    with server.client() as admin:
        answer = admin.post("/os/apps", json={"name": alias})
        assert answer.status_code in (400, 409), answer.text
