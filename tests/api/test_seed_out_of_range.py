"""Issue 20's reproduction over HTTP: a chat with a seed of 2**70 froze every app on the model (each
kernel tick failed in torch). It is refused with a 422 that names the field, as every out-of-range
value is, and the server goes on."""

from __future__ import annotations


def test_a_seed_past_64_bits_is_a_422_naming_seed_and_others_are_served(tiny_server) -> None:
    client = tiny_server.client()
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    refused = client.post("/v1/chat/completions", json={**body, "seed": 2**70})
    assert refused.status_code == 422, refused.text
    assert "seed" in refused.json()["error"]["message"]
    for stream in (False, True):
        ok = client.post("/v1/chat/completions", json={**body, "seed": 2**63 - 1, "stream": stream})
        assert ok.status_code == 200, ok.text
    answer = client.post("/v1/chat/completions", json={**body, "temperature": 0})
    assert answer.json()["choices"][0]["finish_reason"] in ("stop", "length")
