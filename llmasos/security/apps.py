"""Apps: the identities that own processes, with a priority class, a weight, quotas and capabilities.

Persisted in SQLite under $LLMASOS_HOME so they survive restarts. A capability is a pattern
`KIND:NAME` (`model:smollm2-*`, `service:summarize`, `tool:*`) or `admin` (manage apps, see every
process); `fnmatch` rules apply to the name.

Each registered app has an id that no other app ever gets, even one created later with the same
name: every piece of per-app state (processes, knowledge, the prefix cache) keys on `App.identity`,
so an app removed and created again starts with nothing of the old one's.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.errors import AppExistsError, AppNotFoundError, AuthenticationError, InvalidRequestError
from llmasos.privacy.policy import PiiPolicy
from llmasos.security.keys import key_digest, key_hint, new_key
from llmasos.storage.db import Database

#: Priority classes, most urgent first. The kernel maps them to its scheduling classes.
PRIORITY_CLASSES = ("realtime", "interactive", "normal", "batch")
#: `function`: workflow functions (llmasos/workflows/functions.py), Python code run as workflow steps.
CAPABILITY_KINDS = ("model", "service", "tool", "function")
DEFAULT_CAPABILITIES = ("model:*", "service:*", "tool:*", "function:*")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: Names the system gives itself: keyless callers (`anonymous`) and the local admin (`admin`).
RESERVED_NAMES = ("anonymous", "admin")


@dataclass(frozen=True)
class App:
    """One app's identity and limits. Zero in a quota means unlimited."""

    name: str
    priority: str = "normal"
    weight: float = 1.0  # share of the engine relative to other apps of its class
    tokens_per_minute: int = 0  # prompt + generated tokens per rolling minute
    max_concurrent: int = 16  # processes holding the engine at once
    max_queued: int = 64  # processes waiting for the engine
    requests_per_minute: int = 0  # requests it may start a minute (api/request_rate.py); 0: the server's
    request_burst: int = 0  # requests it may start at once after a pause; 0: the server's default
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    share_prefix_cache: bool = False  # opt in to sharing cached prompt prefixes with other apps
    audit_content: bool = False  # opt in to keeping prompts and outputs in the audit log
    pii: PiiPolicy = field(default_factory=PiiPolicy)  # personal data per direction (privacy/policy.py)
    created_at: float = field(default_factory=time.time)
    id: str = ""  # given by the registry when the app is created; never reused by another app

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidRequestError(
                f"app name {self.name!r} is not valid: use 1-64 lowercase letters, digits, '.', '_' or '-'"
            )
        if self.priority not in PRIORITY_CLASSES:
            raise InvalidRequestError(
                f"priority {self.priority!r} is not a class; use one of {', '.join(PRIORITY_CLASSES)}"
            )
        if not isinstance(self.weight, int | float) or not 0 < self.weight <= 1000:
            raise InvalidRequestError(f"weight must be a number in (0, 1000], got {self.weight!r}")
        quotas = ("tokens_per_minute", "max_concurrent", "max_queued", "requests_per_minute", "request_burst")
        for quota in quotas:
            value = getattr(self, quota)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequestError(f"{quota} must be an integer >= 0 (0 = unlimited), got {value!r}")
        object.__setattr__(self, "capabilities", tuple(self.capabilities))
        object.__setattr__(self, "pii", PiiPolicy.parse(self.pii))
        for cap in self.capabilities:
            kind, _, name = cap.partition(":")
            if cap != "admin" and (kind not in CAPABILITY_KINDS or not name):
                raise InvalidRequestError(
                    f"capability {cap!r} is not valid; use admin or KIND:NAME with KIND one of "
                    f"{', '.join(CAPABILITY_KINDS)} (NAME may use * wildcards)"
                )

    @property
    def is_admin(self) -> bool:
        return "admin" in self.capabilities

    def allows(self, kind: str, name: str) -> bool:
        """Whether this app may use the model/service/tool `name`."""
        return self.is_admin or any(
            cap.partition(":")[0] == kind and fnmatch.fnmatchcase(name, cap.partition(":")[2])
            for cap in self.capabilities
        )

    @property
    def identity(self) -> str:
        """What per-app state keys on: the registry's id, or for an app that was never registered
        (the built-in `anonymous`) its name. Names cannot hold ':', so the two never meet."""
        return f"id:{self.id}" if self.id else f"name:{self.name}"

    @property
    def cache_namespace(self) -> str:
        """The prefix-cache partition of this app's processes."""
        return "shared" if self.share_prefix_cache else f"app:{self.identity}"


def _create_apps_table(conn) -> None:
    conn.execute(
        """CREATE TABLE apps (
            name TEXT PRIMARY KEY,
            config TEXT NOT NULL,          -- the App's fields as JSON
            created_at REAL NOT NULL
        )"""
    )


def _create_keys_table(conn) -> None:
    conn.execute(
        """CREATE TABLE api_keys (
            digest TEXT PRIMARY KEY,       -- sha256 of the key; the key itself is never stored
            app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
            hint TEXT NOT NULL,            -- the key's first characters, for listings
            created_at REAL NOT NULL
        )"""
    )


def _give_apps_ids(conn) -> None:
    """Apps from before ids get one each; from now on a new app of an old name gets a new one."""
    conn.execute("ALTER TABLE apps ADD COLUMN id TEXT")
    for name, config in conn.execute("SELECT name, config FROM apps").fetchall():
        app_id = uuid.uuid4().hex
        fields = {**json.loads(config), "id": app_id}
        conn.execute("UPDATE apps SET id = ?, config = ? WHERE name = ?", (app_id, json.dumps(fields), name))
    conn.execute("CREATE UNIQUE INDEX apps_by_id ON apps (id)")


MIGRATIONS = [_create_apps_table, _create_keys_table, _give_apps_ids]
#: Keys remembered as verified (by digest), at most; the oldest is forgotten first.
VERIFIED_KEYS = 1024


class AppRegistry:
    """Create, read, update and delete apps in `$LLMASOS_HOME/state.db`."""

    def __init__(self, path: Path | None = None) -> None:
        self.db = Database(path or llmasos_home() / "state.db", MIGRATIONS)
        # Key digest -> (the database's change stamp when it was looked up, its app). An entry holds
        # only while nothing at all was written since (a revoked key, a removed or changed app, by
        # this process or another), so it answers what a lookup would, without one.
        self._verified: dict[str, tuple[tuple[int, int], App]] = {}
        self._remembering = threading.Lock()

    def close(self) -> None:
        """Close the database (its -wal and -shm files with it)."""
        self.db.close()

    def create(self, app: App, *, system: bool = False) -> App:
        """Register `app` under a new id; returns it with that id. Reserved names are refused
        unless the system makes its own (`system`: the admin app)."""
        if app.name in RESERVED_NAMES and not system:
            raise InvalidRequestError(
                f"the app name {app.name!r} is reserved for the system ({', '.join(RESERVED_NAMES)}); "
                "pick another name"
            )
        app = replace(app, id=uuid.uuid4().hex)
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM apps WHERE name = ?", (app.name,)).fetchone():
                raise AppExistsError(f"app {app.name!r} already exists; pick another name or remove it first")
            conn.execute(
                "INSERT INTO apps (name, config, created_at, id) VALUES (?, ?, ?, ?)",
                (app.name, json.dumps(asdict(app)), app.created_at, app.id),
            )
        return app

    def get(self, name: str) -> App:
        rows = self.db.execute("SELECT config FROM apps WHERE name = ?", (name,))
        if not rows:
            known = ", ".join(a.name for a in self.list()) or "none"
            raise AppNotFoundError(
                f"no app named {name!r} (apps: {known}); create it with `llmasos apps create`"
            )
        return _app_from_json(rows[0]["config"])

    def exists(self, app_id: str) -> bool:
        """Whether the app with this id is still registered (a namesake has another id)."""
        return bool(self.db.execute("SELECT 1 FROM apps WHERE id = ?", (app_id,)))

    def list(self) -> list[App]:
        return [_app_from_json(r["config"]) for r in self.db.execute("SELECT config FROM apps ORDER BY name")]

    def update(self, name: str, **changes: object) -> App:
        if "id" in changes or "name" in changes:
            raise InvalidRequestError("an app's name and id cannot change; create another app instead")
        app = replace(self.get(name), **changes)
        self.db.execute("UPDATE apps SET config = ? WHERE name = ?", (json.dumps(asdict(app)), name))
        return app

    def remove(self, name: str) -> App:
        """Remove app `name` and its keys; returns what it was."""
        app = self.get(name)
        self.db.execute("DELETE FROM apps WHERE name = ?", (name,))
        return app

    # ---- keys -----------------------------------------------------------------------------------

    def issue_key(self, name: str) -> str:
        """A new API key for app `name`. Returned once; only its hash is kept."""
        self.get(name)
        key = new_key()
        self.db.execute(
            "INSERT INTO api_keys (digest, app, hint, created_at) VALUES (?, ?, ?, ?)",
            (key_digest(key), name, key_hint(key), time.time()),
        )
        return key

    def revoke_keys(self, name: str) -> int:
        """Revoke every key of app `name`; returns how many there were."""
        self.get(name)
        with self.db.transaction() as conn:
            count = conn.execute("SELECT COUNT(*) FROM api_keys WHERE app = ?", (name,)).fetchone()[0]
            conn.execute("DELETE FROM api_keys WHERE app = ?", (name,))
        return count

    def key_ids(self, name: str) -> dict[str, str]:
        """{key id: hint} of app `name`'s keys, oldest first. A key id is the first 16 hex digits of
        the key's digest (`key_id`): what per-key state (an analyst's privacy budget) keys on."""
        self.get(name)
        rows = self.db.execute("SELECT digest, hint FROM api_keys WHERE app = ? ORDER BY created_at", (name,))
        return {r["digest"][:KEY_ID_DIGITS]: r["hint"] for r in rows}

    def key_hints(self, name: str) -> list[str]:
        rows = self.db.execute("SELECT hint FROM api_keys WHERE app = ? ORDER BY created_at", (name,))
        return [r["hint"] for r in rows]

    def authenticate(self, key: str | None) -> App:
        """The app a key belongs to; AuthenticationError if there is none."""
        if not key:
            raise AuthenticationError(
                "no API key: send `Authorization: Bearer <key>`; `llmasos apps create NAME` makes one"
            )
        digest = key_digest(key)
        stamp = self.db.change_stamp()  # before the lookup: a write after it changes the stamp
        entry = self._verified.get(digest)
        if entry is not None and entry[0] == stamp:
            return entry[1]
        rows = self.db.execute(
            "SELECT a.config FROM api_keys k JOIN apps a ON a.name = k.app WHERE k.digest = ?", (digest,)
        )
        if not rows:
            with self._remembering:
                self._verified.pop(digest, None)
            raise AuthenticationError(
                "the API key is not valid (revoked, or for another LLMASOS_HOME); ask an admin for a new one"
            )
        app = _app_from_json(rows[0]["config"])
        with self._remembering:
            self._verified[digest] = (stamp, app)
            while len(self._verified) > VERIFIED_KEYS:
                del self._verified[next(iter(self._verified))]
        return app

    def verified(self, key: str) -> App | None:
        """The app of `key` if `authenticate` verified it since the last write to the registry,
        without waiting for the database: a server's event loop asks this first, and only a key it
        does not answer for costs a lookup in a thread. None: look it up (`authenticate`)."""
        try:
            entry = self._verified.get(key_digest(key))
        except UnicodeEncodeError:
            return None
        if entry is None or self.db.change_stamp(blocking=False) != entry[0]:
            return None
        return entry[1]


KEY_ID_DIGITS = 16


def key_id(key: str) -> str:
    """The public id of an API key (not the key; not reversible to it)."""
    return key_digest(key)[:KEY_ID_DIGITS]


def _app_from_json(text: str) -> App:
    fields = json.loads(text)
    fields["capabilities"] = tuple(fields.get("capabilities", DEFAULT_CAPABILITIES))
    fields["pii"] = PiiPolicy.parse(fields.get("pii"))
    return App(**fields)
