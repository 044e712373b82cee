"""System calls from the command line: `apps`, `models` and `audit` act as the local admin app (the
user who holds `$LLMASOS_HOME` holds its key) through the same system calls as HTTP, so they are
checked and audited (interface `cli`) the same way. No kernel thread starts and no model loads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from llmasos.errors import ServerUnavailableError, error_from_wire
from llmasos.sdk.discovery import read_server_file
from llmasos.security.admin import ensure_admin, read_admin_key
from llmasos.security.apps import App

if TYPE_CHECKING:
    from llmasos.kernel.syscalls import Syscalls


@contextmanager
def admin_syscalls() -> Iterator[tuple[Syscalls, App]]:
    """(system calls, the admin app to call them as), for one command."""
    from llmasos.kernel.boot import boot  # imports torch: only for the commands that need it

    syscalls = boot(interface="cli")
    app, _ = ensure_admin(syscalls.apps)
    try:
        yield syscalls, app
    finally:
        syscalls.close()


def remove_app_on_server(name: str) -> bool:
    """Remove app `name` through the running server, if one runs here, so that the server cancels the
    app's live processes at once (a removal made in this process could not reach them); False
    when no server runs."""
    return delete_on_server(f"/os/apps/{name}") is not None


def revoke_keys_on_server(name: str) -> int | None:
    """Revoke every key of app `name` through the running server, which cancels the app's live
    processes at once; how many keys it revoked, or None when no server runs."""
    answer = delete_on_server(f"/os/apps/{name}/keys")
    return None if answer is None else int(answer["revoked"])


def delete_on_server(path: str) -> dict | None:
    """DELETE `path` on the server running here, as the admin app: its JSON answer, None when no
    server runs (or it does not answer), or the error it answered, raised."""
    return request_on_server("DELETE", path)


def request_on_server(method: str, path: str, body: dict | None = None) -> dict | None:
    """`method path` (with a JSON `body`) on the server running here, as the admin app: its JSON
    answer, None when no server runs (or it does not answer), or the error it answered, raised."""
    info, key = read_server_file(), read_admin_key()
    if info is None or key is None:
        return None
    import httpx

    try:
        headers = {"Authorization": f"Bearer {key}"}
        response = httpx.request(method, f"{info['url']}{path}", headers=headers, json=body, timeout=300)
    except httpx.HTTPError:
        return None  # recorded but not answering: act on the files directly
    if response.status_code >= 400:
        try:
            body = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            body = {"message": response.text, "type": None}
        err = error_from_wire(body.get("type"), response.status_code, body.get("message", ""))
        err.audited = True  # the server wrote its row
        raise err
    return response.json()


def on_server(method: str, path: str, body: dict | None = None) -> dict:
    """As `request_on_server`, for commands that only a running server can do (models live in it):
    ServerUnavailableError saying how to start one when none runs here."""
    answer = request_on_server(method, path, body)
    if answer is None:
        raise ServerUnavailableError(
            "no llmasos server runs under this LLMASOS_HOME, and models are loaded into one; "
            "start it with `llmasos serve`"
        )
    return answer
