"""The system calls that manage the system rather than run work: apps and their keys, the model
library, the audit log. Every interface (HTTP, the CLI, the SDK) reaches these through `Syscalls`,
so each is checked (most need the admin capability) and audited the same way from every door.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmasos.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from llmasos.library.store import ModelStore
from llmasos.security.apps import App, AppRegistry
from llmasos.security.audit import AuditLog, AuditReport
from llmasos.security.key_rotation import RotationReport, rotate_master_key

if TYPE_CHECKING:
    from llmasos.kernel.call_trail import CallTrail
    from llmasos.kernel.kernel import Kernel
    from llmasos.kernel.process import Process

#: What `update_app` may change: how an app is scheduled and limited, not who it is or what it may use.
#: What `update_app` may change; `pii` is a `PiiPolicy` (set by `llmasos apps update --pii`).
UPDATABLE_FIELDS = (
    "priority",
    "weight",
    "tokens_per_minute",
    "max_concurrent",
    "max_queued",
    "pii",
    "requests_per_minute",
    "request_burst",
)


class AdminCalls:
    """Mixed into `Syscalls`, which provides `kernel`, `apps` and `trail`."""

    kernel: Kernel
    apps: AppRegistry
    trail: CallTrail
    delete_app_data: Any  # from DataCalls
    privacy: Any  # PrivacyGuard, set by Syscalls

    # ---- apps -----------------------------------------------------------------------------------

    def create_app(self, caller: App, app: App) -> tuple[App, str]:
        """Register `app`; returns it (with its new id) and its first API key (shown once, stored hashed)."""
        with self.trail.audited(caller, "apps.create", app.name):
            self._require_admin(caller, "create apps")
            created = self.apps.create(app)
            return created, self.apps.issue_key(created.name)

    def remove_app(self, caller: App, name: str) -> None:
        """Remove an app and its keys, and cancel its live processes at once."""
        with self.trail.audited(caller, "apps.remove", name):
            self._require_admin(caller, "remove apps")
            removed = self.apps.remove(name)
            self._cancel_all_of(removed, f"app {name!r} was removed")
            self.delete_app_data(removed)  # its files, stores, chunks, vectors and keys (DataCalls)
            self.privacy.forget(removed.identity)  # its placeholders' values, held in memory only

    def update_app(self, caller: App, name: str, **changes: Any) -> App:
        """Change app `name`'s priority class, weight, quotas or privacy policy (admin only); returns
        the app as it now is. Its next requests run under them (processes already admitted keep the
        class and weight they started with)."""
        with self.trail.audited(caller, "apps.update", name):
            self._require_admin(caller, "change apps")
            unknown = set(changes) - set(UPDATABLE_FIELDS)
            if unknown:
                raise InvalidRequestError(
                    f"cannot change {', '.join(sorted(unknown))} of an app; "
                    f"changeable: {', '.join(UPDATABLE_FIELDS)}"
                )
            return self.apps.update(name, **changes)

    def issue_key(self, caller: App, name: str, *, revoke_old: bool = False) -> tuple[str, int]:
        """Another API key for app `name` (to rotate it: `revoke_old`); returns it and how many old
        keys were revoked. The app keeps a key, so its processes go on."""
        with self.trail.audited(caller, "apps.new_key", name):
            self._require_admin(caller, "issue keys")
            revoked = self.apps.revoke_keys(name) if revoke_old else 0
            return self.apps.issue_key(name), revoked

    def revoke_keys(self, caller: App, name: str) -> int:
        """Revoke every key of app `name` and cancel its live processes: nothing acts for it any more."""
        with self.trail.audited(caller, "apps.revoke_keys", name):
            self._require_admin(caller, "revoke keys")
            revoked = self.apps.revoke_keys(name)
            self._cancel_all_of(self.apps.get(name), f"the keys of app {name!r} were revoked")
            return revoked

    def get_app(self, caller: App, name: str) -> App:
        with self.trail.audited(caller, "apps.show", name):
            if name != caller.name:
                self._require_admin(caller, "see other apps")
            return self.apps.get(name)

    def list_apps(self, caller: App) -> list[App]:
        with self.trail.audited(caller, "apps.list"):
            return self.apps.list() if caller.is_admin else [caller]

    def key_hints(self, caller: App, name: str) -> list[str]:
        """The first characters of each key of app `name`, to tell them apart in listings."""
        if name != caller.name:
            self._require_admin(caller, "see other apps' keys")
        return self.apps.key_hints(name)

    def cancel_if_removed(self, app: App, process: Process) -> None:
        """Cancel a just-admitted process whose app was removed meanwhile. Removal deletes the app,
        then cancels what the table holds; admission puts the process in the table, then checks the
        app: whichever comes second sees the other, so no process outlives its app."""
        if app.id and not self.apps.exists(app.id):
            self.kernel.cancel(process, f"app {app.name!r} was removed", _removed(app.name))

    def _cancel_all_of(self, app: App, why: str) -> None:
        error = _removed(app.name, why)
        with self.kernel.lock:
            live = [p for p in self.kernel.table.values() if p.app_id == app.identity and not p.is_terminal]
        for process in live:
            self.kernel.cancel(process, why, error)

    # ---- the model library ---------------------------------------------------------------------

    def list_models(self, caller: App) -> list[dict[str, Any]]:
        """The library's models this app may use, each with the path a loader would open."""
        with self.trail.audited(caller, "models.list"):
            store = ModelStore()
            return [_details(m, store) for m in store.list() if caller.allows("model", m.name)]

    def show_model(self, caller: App, name: str) -> dict[str, Any]:
        with self.trail.audited(caller, "models.show", name):
            store = ModelStore()
            manifest = store.get(name)
            if not caller.allows("model", manifest.name):
                raise PermissionDeniedError(
                    f"app {caller.name!r} may not use model {manifest.name!r}; an admin can grant "
                    f"model:{manifest.name}"
                )
            return _details(manifest, store)

    def pull_model(
        self,
        caller: App,
        source: str,
        name: str | None = None,
        *,
        force: bool = False,
        progress: bool = False,
        encrypt: bool = False,
    ) -> dict[str, Any]:
        """Add a model to the library (see `library.sources`); admin only: it fetches and writes.
        With `encrypt`, it is stored sealed under the master key (library/encrypted.py)."""
        with self.trail.audited(caller, "models.pull", name or source):
            self._require_admin(caller, "pull models")
            store = ModelStore()
            manifest = store.pull(source, name, force=force, progress=progress, encrypt=encrypt)
            return _details(manifest, store)

    def remove_model(self, caller: App, name: str) -> dict[str, Any]:
        with self.trail.audited(caller, "models.remove", name):
            self._require_admin(caller, "remove models")
            return ModelStore().remove(name).to_dict()

    def rotate_master_key(self, caller: App) -> RotationReport:
        """Re-wrap every data key and encrypted model under a new master key (security/key_rotation.py)."""
        with self.trail.audited(caller, "keys.rotate", "master"):
            self._require_admin(caller, "rotate the master key")
            return rotate_master_key()

    # ---- the audit log -------------------------------------------------------------------------

    def query_audit(self, caller: App, **filters: Any) -> list[dict]:
        """Audit rows, newest first (see `AuditLog.query` for the filters). An app that is not an
        admin sees its own rows only."""
        with self.trail.audited(caller, "audit.query", filters.get("app") or ""):
            if not caller.is_admin:
                if filters.get("app") not in (None, caller.name):
                    raise PermissionDeniedError(
                        f"app {caller.name!r} may read its own audit rows only; it needs the admin capability"
                    )
                filters["app"] = caller.name
            return self._audit_log().query(**filters)

    def verify_audit(self, caller: App) -> AuditReport:
        """Check the whole audit log (admin only); the report says exactly what is wrong, if anything."""
        with self.trail.audited(caller, "audit.verify"):
            self._require_admin(caller, "verify the audit log")
            return self._audit_log().verify()

    def _audit_log(self) -> AuditLog:
        return self.trail.audit if self.trail.audit is not None else AuditLog()

    @staticmethod
    def _require_admin(caller: App, what: str) -> None:
        if not caller.is_admin:
            raise PermissionDeniedError(f"app {caller.name!r} may not {what}; it needs the admin capability")


def _removed(name: str, why: str | None = None) -> AuthenticationError:
    return AuthenticationError(f"{why or f'app {name!r} was removed'}; its processes were cancelled")


def _details(manifest: Any, store: ModelStore) -> dict[str, Any]:
    """The manifest plus the absolute path a loader would open."""
    return {**manifest.to_dict(), "path": str(manifest.resolve(store.root / manifest.name))}
