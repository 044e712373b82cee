"""The admin app: created on first start, its key kept in `$LLMASOS_HOME/admin.key` (mode 0600)
for the local CLI and SDK, which read it instead of asking the user for a key."""

from __future__ import annotations

from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.errors import AppNotFoundError, AuthenticationError
from llmasos.security.apps import App, AppRegistry
from llmasos.storage.files import write_private

ADMIN_APP = "admin"


def admin_key_path() -> Path:
    return llmasos_home() / "admin.key"


def read_admin_key() -> str | None:
    """The local admin key, or None when there is none (no server ever started here)."""
    try:
        return admin_key_path().read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_admin(registry: AppRegistry) -> tuple[App, str]:
    """The admin app and a working key for it, creating either when missing."""
    try:
        app = registry.get(ADMIN_APP)
    except AppNotFoundError:
        app = registry.create(App(ADMIN_APP, priority="interactive", capabilities=("admin",)), system=True)
    key = read_admin_key()
    if key is not None:
        try:
            if registry.authenticate(key).name == ADMIN_APP:
                return app, key
        except AuthenticationError:
            pass  # revoked or from another home: issue a new one below
    key = registry.issue_key(ADMIN_APP)
    write_private(admin_key_path(), key + "\n")
    return app, key
