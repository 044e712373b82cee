"""Guessing a key (docs/THREAT_MODEL.md, boundary B1). Keys carry 256 random bits, and failed checks
are locked out per client address (`api/auth_guard.py`, h6's limiter; its own tests cover the
policy's details): however fast a client sends guesses, only a handful are ever checked."""

from __future__ import annotations

import math
import secrets

import httpx

from llmasos.api.auth_guard import FailedAuthPolicy
from llmasos.security.keys import KEY_PREFIX, new_key
from tests.api.conftest import LiveServer


def test_a_key_has_at_least_256_random_bits() -> None:
    key = new_key()
    body = key.removeprefix(KEY_PREFIX)
    assert key.startswith(KEY_PREFIX) and len(body) >= 43  # 32 bytes of base64url
    assert math.log2(64) * len(body) >= 256
    assert len({new_key() for _ in range(1000)}) == 1000


def test_guesses_beyond_a_few_are_never_checked(server: LiveServer) -> None:
    policy = FailedAuthPolicy()
    statuses = []
    admin = server.client()
    assert admin.get("/v1/models").status_code == 200  # a key that worked before the attack...
    with httpx.Client(base_url=server.url, timeout=30) as guesser:
        for _ in range(200):
            guess = KEY_PREFIX + secrets.token_urlsafe(32)
            statuses.append(
                guesser.get("/v1/models", headers={"Authorization": f"Bearer {guess}"}).status_code
            )
        locked = guesser.get("/v1/models", headers={"Authorization": f"Bearer {new_key()}"})
    assert set(statuses) <= {401, 429}
    # Within one window: the free failures, then one more check after each lockout (1 s, doubling).
    assert statuses.count(401) <= policy.free_failures + 3, statuses.count(401)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    # ...still works during it (a key never seen before from that address waits the lockout out)
    assert admin.get("/v1/models").status_code == 200
    admin.close()
