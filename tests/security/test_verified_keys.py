"""Keys verified in memory (`AppRegistry.verified`): the same answer as a lookup, never a stale one.

The server's event loop asks `verified` before handing a key to a thread for `authenticate`; any
write to the registry since a key was verified, by this registry, another in the same process or
another process's, must send the key back to a real lookup."""

from __future__ import annotations

import threading

import pytest

from llmasos.errors import AuthenticationError
from llmasos.security import apps as apps_module
from llmasos.security.apps import App, AppRegistry


@pytest.fixture
def registry(llmasos_home) -> AppRegistry:
    return AppRegistry()


def test_a_key_is_known_in_memory_only_once_a_lookup_verified_it(registry) -> None:
    registry.create(App("calm"))
    key = registry.issue_key("calm")
    assert registry.verified(key) is None
    assert registry.authenticate(key).name == "calm"
    assert registry.verified(key).name == "calm"
    assert registry.verified(key + "x") is None


@pytest.mark.parametrize("writer", ["same registry", "another registry"])
def test_revoking_removing_or_changing_an_app_forgets_what_was_verified(registry, writer) -> None:
    """Another registry is another SQLite connection, as the CLI's in another process is."""
    other = registry if writer == "same registry" else AppRegistry()
    registry.create(App("calm"))
    key = registry.issue_key("calm")
    registry.authenticate(key)

    other.update("calm", tokens_per_minute=100)
    assert registry.verified(key) is None  # the change must be read, not the remembered app
    assert registry.authenticate(key).tokens_per_minute == 100
    assert registry.verified(key).tokens_per_minute == 100

    other.revoke_keys("calm")
    assert registry.verified(key) is None
    with pytest.raises(AuthenticationError):
        registry.authenticate(key)

    key = other.issue_key("calm")
    registry.authenticate(key)
    other.remove("calm")
    assert registry.verified(key) is None
    with pytest.raises(AuthenticationError):
        registry.authenticate(key)


def test_a_write_between_the_check_and_the_lookup_is_not_remembered_as_current(registry, monkeypatch) -> None:
    """The stamp is read before the lookup: a revocation that lands in between leaves the entry
    stale at once, so the next request looks the key up again."""
    registry.create(App("calm"))
    key = registry.issue_key("calm")
    other = AppRegistry()
    real_execute = registry.db.execute

    def revoke_first(sql, params=()):
        if "api_keys k JOIN apps" in sql:
            rows = real_execute(sql, params)  # the lookup sees the key...
            other.revoke_keys("calm")  # ...and it is revoked just after
            return rows
        return real_execute(sql, params)

    monkeypatch.setattr(registry.db, "execute", revoke_first)
    assert registry.authenticate(key).name == "calm"
    monkeypatch.setattr(registry.db, "execute", real_execute)
    assert registry.verified(key) is None
    with pytest.raises(AuthenticationError):
        registry.authenticate(key)


def test_a_busy_database_is_not_waited_for(registry) -> None:
    registry.create(App("calm"))
    key = registry.issue_key("calm")
    registry.authenticate(key)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with registry.db.transaction():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        assert registry.verified(key) is None  # answered at once: "look it up"
    finally:
        release.set()
        thread.join(10)
    assert registry.verified(key).name == "calm"


def test_the_remembered_keys_are_bounded(registry, monkeypatch) -> None:
    monkeypatch.setattr(apps_module, "VERIFIED_KEYS", 3)
    registry.create(App("calm"))
    keys = [registry.issue_key("calm") for _ in range(5)]
    for key in keys:
        registry.authenticate(key)
    assert [registry.verified(k) is not None for k in keys] == [False, False, True, True, True]
