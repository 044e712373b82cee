"""API keys: random secrets shown once, stored only as hashes.

A key is `lmos-` followed by 32 random bytes in URL-safe base64 (256 bits). With that much entropy
a single SHA-256 is enough to make a stolen database useless (no dictionary to try), and unlike a
slow password hash it costs microseconds per request. Lookups compare digests, never keys.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "lmos-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_hint(key: str) -> str:
    """The first characters of a key, safe to show in listings so users can tell keys apart."""
    return key[: len(KEY_PREFIX) + 4] + "…"
