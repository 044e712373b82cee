"""A model name in another case reaches the same model over HTTP (the store resolves names)."""

from __future__ import annotations


def test_chat_with_the_model_name_in_capitals_is_served(tiny_server) -> None:
    body = {"model": "TINY", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    r = tiny_server.client().post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text


def test_an_unknown_model_offers_the_closest_name(tiny_server) -> None:
    body = {"model": "tinny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    r = tiny_server.client().post("/v1/chat/completions", json=body)
    assert r.status_code == 404, r.text
    assert "did you mean 'tiny'?" in r.json()["error"]["message"]
