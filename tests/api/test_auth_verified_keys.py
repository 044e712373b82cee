"""The server answers a key it verified lately from memory (`AppRegistry.verified`), with no thread
hop; a key revoked or an app changed or removed meanwhile, here or by another process (the CLI
writes the same database), is looked up again on its very next request."""

from __future__ import annotations

from llmasos.security.apps import AppRegistry

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def test_a_key_revoked_by_another_process_is_refused_on_its_next_request(tiny_server):
    key = tiny_server.new_app("cached")
    client = tiny_server.client(key)
    assert client.get("/v1/models").status_code == 200
    assert tiny_server.syscalls.apps.verified(key) is not None  # the next request skips the lookup
    other = AppRegistry()  # as `llmasos apps revoke` in another process: its own connection
    other.revoke_keys("cached")
    assert client.get("/v1/models").status_code == 401


def test_an_app_changed_by_another_process_is_read_afresh(tiny_server):
    key = tiny_server.new_app("changing")
    client = tiny_server.client(key)
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    AppRegistry().update("changing", capabilities=("service:*",))  # no model may be used now
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 403
    AppRegistry().remove("changing")
    assert client.get("/v1/models").status_code == 401
