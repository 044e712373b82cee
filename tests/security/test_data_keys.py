"""Per-app data keys: values sealed under them open only as the same app's same value, a rotation of
the master key keeps every value readable (in this process and a fresh one) without re-encrypting
anything, and a wrong or missing master key is a clear error before anything is decrypted."""

from __future__ import annotations

import pytest

from llmasos.data.app_data import app_data, delete_app_data
from llmasos.data.kv import kv_get, kv_set
from llmasos.errors import DecryptionError, MasterKeyError
from llmasos.security import master_key
from llmasos.security.data_keys import DataKeys, data_keys
from llmasos.security.key_rotation import rotate_master_key


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


def test_a_sealed_value_opens_only_as_its_own_app_and_purpose() -> None:
    keys = data_keys()
    sealed = keys.seal_text("id:a", "card 4111", "kv:x")
    assert "4111" not in sealed and keys.open_text(sealed, "kv:x") == "card 4111"
    with pytest.raises(DecryptionError, match="failed authentication"):
        keys.open_text(sealed, "kv:y")  # moved to another key
    forged = sealed.replace("id:a:", "id:b:")
    keys.seal_text("id:b", "other", "kv:x")
    with pytest.raises(DecryptionError, match="failed authentication"):
        keys.open_text(forged, "kv:x")  # moved to another app
    assert keys.open_text("plain from before", "kv:x") == "plain from before"


def test_rotation_keeps_values_readable_without_a_restart_and_after_one() -> None:
    data = app_data("id:alpha")
    kv_set(data, "k", {"v": 1})
    stored_before = data.db.execute("SELECT value FROM kv")[0]["value"]
    old_id = master_key.configured_key().key_id
    report = rotate_master_key()
    assert report.data_keys == 1 and report.old_key_ids == (old_id,)
    assert master_key.configured_key().key_id == report.new_key_id
    assert kv_get(data, "k")["value"] == {"v": 1}  # the running process keeps its unwrapped key
    assert data.db.execute("SELECT value FROM kv")[0]["value"] == stored_before  # nothing re-encrypted
    fresh = DataKeys(data_keys().path)  # a restarted server unwraps under the new master key
    assert fresh.open_text(stored_before, "kv:k") == '{"v": 1}'
    assert fresh.master_key_ids() == {report.new_key_id: 1}


def test_wrong_or_missing_master_key_refuses_before_decrypting(monkeypatch: pytest.MonkeyPatch) -> None:
    kv_set(app_data("id:alpha"), "k", "secret")
    sealed = app_data("id:alpha").db.execute("SELECT value FROM kv")[0]["value"]
    saved = master_key.key_file().read_text()
    master_key.key_file().unlink()
    with pytest.raises(MasterKeyError, match="none was found"):
        DataKeys(data_keys().path).open_text(sealed, "kv:k")
    monkeypatch.setenv(master_key.ENV_VAR, master_key.encode_key(master_key.new_key()))
    with pytest.raises(MasterKeyError, match="wrapped under master key"):
        DataKeys(data_keys().path).open_text(sealed, "kv:k")
    monkeypatch.delenv(master_key.ENV_VAR)
    master_key.store_key_file(master_key.key_file(), master_key.decode_key(saved, "saved"))
    assert DataKeys(data_keys().path).open_text(sealed, "kv:k") == '"secret"'


def test_deleting_the_app_shreds_its_key_and_its_sealed_values() -> None:
    kv_set(app_data("id:alpha"), "k", "secret")
    sealed = app_data("id:alpha").db.execute("SELECT value FROM kv")[0]["value"]
    wrapped = bytes(data_keys().db.execute("SELECT wrapped FROM data_keys")[0]["wrapped"])
    delete_app_data("id:alpha")
    with pytest.raises(DecryptionError, match="data key was destroyed"):
        data_keys().open_text(sealed, "kv:k")
    # No copy of the wrapped key is left in the database's free pages or its write-ahead log.
    folder = data_keys().path.parent
    assert not any(wrapped in p.read_bytes() for p in folder.iterdir() if p.name.startswith("data_keys.db"))


def test_a_rotation_cut_short_still_opens_everything_and_finishes_with_its_own_key() -> None:
    data = app_data("id:alpha")
    kv_set(data, "k", "secret")
    stored = data.db.execute("SELECT value FROM kv")[0]["value"]
    pending = master_key.MasterKey(master_key.new_key(), "file")
    master_key.store_key_file(master_key.next_key_file(), pending.key)
    data_keys().rotate(pending)  # ...and the process dies before master.key is replaced
    assert DataKeys(data_keys().path).open_text(stored, "kv:k") == '"secret"'  # both keys are loaded
    report = rotate_master_key()
    assert report.new_key_id == pending.key_id and not master_key.next_key_file().exists()
    assert master_key.configured_key().key_id == pending.key_id
    assert DataKeys(data_keys().path).open_text(stored, "kv:k") == '"secret"'


def test_the_master_key_from_the_system_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keyring is asked through the `keyring` package's API (a stand-in here: no backend on this
    machine), after the environment and before the key file."""
    import sys
    import types

    key = master_key.new_key()
    asked = []

    def get_password(service: str, user: str) -> str:
        asked.append((service, user))
        return master_key.encode_key(key)

    errors = types.SimpleNamespace(KeyringError=RuntimeError)
    monkeypatch.setitem(
        sys.modules, "keyring", types.SimpleNamespace(get_password=get_password, errors=errors)
    )
    monkeypatch.setitem(sys.modules, "keyring.errors", errors)
    found = master_key.configured_key()
    assert found is not None and found.source == "keyring" and found.key == key
    assert asked == [("llmasos", f"master-key:{master_key.llmasos_home()}")]
    sealed = data_keys().seal_text("id:k", "v", "kv:k")
    assert not master_key.key_file().exists()  # nothing written: the keyring holds it
    assert data_keys().master_key_ids() == {found.key_id: 1}
    assert DataKeys(data_keys().path).open_text(sealed, "kv:k") == "v"


def test_a_lost_master_key_is_never_silently_replaced_by_a_new_one() -> None:
    kv_set(app_data("id:alpha"), "k", "secret")
    used = master_key.configured_key().key_id
    master_key.key_file().unlink()
    with pytest.raises(MasterKeyError, match=f"master key {used} is needed and none was found"):
        kv_set(app_data("id:beta"), "k", "new data")  # a new app's key would need a master key
    assert not master_key.key_file().exists()
