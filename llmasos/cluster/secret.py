"""The cluster secret: what a node proves it knows before the head lets it serve.

The secret lives in `$LLMASOS_HOME/cluster_secret` (0600), made on first use; an operator copies it to
each node (or passes `--secret-file`). A node proves it with an HMAC of its own name, so the secret
itself never crosses the wire. Ray's own token authentication (`RAY_AUTH_MODE=token`) is set from the
same secret by the CLI, so a process without it cannot even reach the head's Ray services.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from llmasos.config import llmasos_home

SECRET_FILE = "cluster_secret"


def secret_path(home: Path | None = None) -> Path:
    return (home or llmasos_home()) / SECRET_FILE


def load_or_create_secret(path: Path | None = None) -> str:
    """The cluster secret at `path` (default: under $LLMASOS_HOME), made (0600) if there is none."""
    path = path or secret_path()
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def join_proof(secret: str, node_name: str) -> str:
    """What a node named `node_name` presents at join: HMAC-SHA256 of its name under the secret."""
    return hmac.new(secret.encode(), b"llmasos-join:" + node_name.encode(), hashlib.sha256).hexdigest()


def is_valid_proof(secret: str, node_name: str, proof: str) -> bool:
    return hmac.compare_digest(join_proof(secret, node_name), proof or "")
