"""`llmasos keys rotate`: every wrapped key (apps' data keys, encrypted models' file keys) re-wrapped
under a new master key, with no data re-encrypted and no server stopped."""

from __future__ import annotations

from dataclasses import dataclass

from llmasos.errors import MasterKeyError
from llmasos.library.encrypted import rewrap_models
from llmasos.security import master_key
from llmasos.security.data_keys import data_keys


@dataclass(frozen=True)
class RotationReport:
    old_key_ids: tuple[str, ...]
    new_key_id: str
    data_keys: int  # data keys re-wrapped
    model_files: int  # encrypted model files whose header was re-wrapped
    new_key_file: str | None  # where the new key waits when the configured one is not a file


def rotate_master_key(new_key: bytes | None = None) -> RotationReport:
    """Re-wrap every data key and encrypted model file under a new master key, then make it current.

    Safe against a crash at any step: the new key is first written as `master.key.next` (loaded beside
    the old one), then the keys are re-wrapped, then it replaces `master.key`. Where the master key
    comes from the environment or the keyring, the new key is left in `master.key.next` and the
    caller must put it there and remove the file (the CLI says so). A rotation that was interrupted
    is finished with the key it started, never a third one (which would strand what it re-wrapped)."""
    available = master_key.available_keys()
    if not available:
        raise MasterKeyError(master_key.missing_key_message())
    pending = next((k for k in available.values() if k.source.startswith("file (rotation")), None)
    if pending is not None:
        new = pending
    else:
        new = master_key.MasterKey(new_key or master_key.new_key(), "file")
        master_key.store_key_file(master_key.next_key_file(), new.key)
    old = tuple(key_id for key_id in available if key_id != new.key_id)
    count = data_keys().rotate(new)
    models = rewrap_models(new)
    master_key.remember(new)
    configured = master_key.configured_key()
    if configured is not None and configured.source == "file":
        master_key.store_key_file(master_key.key_file(), new.key)
        master_key.next_key_file().unlink()
        return RotationReport(old, new.key_id, count, models, None)
    return RotationReport(old, new.key_id, count, models, str(master_key.next_key_file()))
