"""Ollama routes read a body sent without Content-Type as JSON, as Ollama does (litellm's
`ollama_chat/` sends one), unless a web page sent it (an Origin header): FastAPI's guard against
cross-site requests stays for browsers."""

from __future__ import annotations

import json

BODY = json.dumps(
    {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"num_predict": 2},
    }
).encode()


def test_a_bare_json_body_from_a_client_is_read(tiny_server):
    r = tiny_server.client().post("/api/chat", content=BODY)
    assert "content-type" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True and r.json()["message"]["role"] == "assistant"


def test_a_bare_body_from_a_web_page_is_still_refused(tiny_server):
    r = tiny_server.client().post("/api/chat", content=BODY, headers={"Origin": "http://evil.example"})
    assert r.status_code == 400 and "Content-Type" in r.json()["error"]
    r = tiny_server.client().post("/v1/chat/completions", content=BODY)  # OpenAI routes: unchanged
    assert r.status_code == 400
