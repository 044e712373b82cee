"""The prefix cache as a channel between apps (docs/THREAT_MODEL.md, boundary B4: app -> shared
engine). A cached prefix makes its prompt's first token come sooner; if app B could hit blocks
that app A's prompt computed, B could learn by timing what A's prompts begin with (vLLM
CVE-2025-46570). Each app's processes get their own cache namespace unless the operator lets the
app share (`share_prefix_cache`). Counted here, in prefix-cache hits, not timed:
`benchmarks/prefix_cache_timing.py` measures the time to first token."""

from __future__ import annotations

from tests.api.conftest import LiveServer

SECRET_PREFIX = "Board minutes, strictly confidential: the merger with Contoso closes on the ninth. " * 2


def _hits_of(server: LiveServer, http, prompt: str) -> int:
    """Prompt tokens found in the prefix cache while `http`'s app completed `prompt`."""
    answer = http.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 1})
    assert answer.status_code == 200, answer.text
    return server.engine().block_manager.num_prefix_hits


def test_another_app_gets_no_cache_hit_from_an_apps_prompt(server: LiveServer) -> None:
    alice = server.client(server.new_app("alice"))
    bob = server.client(server.new_app("bob"))
    with alice, bob:
        before = _hits_of(server, alice, SECRET_PREFIX + "Alice asks one.")
        after_bob = _hits_of(server, bob, SECRET_PREFIX + "Bob asks two.")
        assert after_bob == before  # bob's prompt starts alike; nothing of alice's was shared
        after_alice = _hits_of(server, alice, SECRET_PREFIX + "Alice asks three.")
        assert after_alice - after_bob >= 16  # the control: alice hits her own cached blocks


def test_apps_share_only_when_both_are_let_to(server: LiveServer) -> None:
    carol = server.client(server.new_app("carol", share_prefix_cache=True))
    dave = server.client(server.new_app("dave", share_prefix_cache=True))
    erin = server.client(server.new_app("erin"))
    with carol, dave, erin:
        before = _hits_of(server, carol, SECRET_PREFIX + "Carol one.")
        after_dave = _hits_of(server, dave, SECRET_PREFIX + "Dave two.")
        assert after_dave - before >= 16  # sharing, as the operator allowed both
        assert _hits_of(server, erin, SECRET_PREFIX + "Erin three.") == after_dave  # erin did not opt in
