"""The master key: the one secret that wraps every other key (apps' data keys, encrypted models' file
keys). It never encrypts data itself, so changing it (`llmasos keys rotate`) re-wraps a few dozen bytes
per key instead of re-encrypting data.

Where it comes from, first found wins:
1. `LLMASOS_MASTER_KEY`: 32 bytes as base64 (what `llmasos keys generate` prints) or 64 hex digits;
2. the system keyring (the `keyring` package, when installed and a backend is available), service
   `llmasos`, user `master-key:<LLMASOS_HOME>`;
3. the key file `$LLMASOS_HOME/keys/master.key` (mode 0600; a file others can read is refused).

A key is named by its id, an HMAC of a fixed label under the key (not the key, and not reversible to
it), which wrapped keys record so that a wrong key is named as such instead of failing obscurely.
During a rotation `master.key.next` holds the new key until every wrapped key is re-wrapped; both are
loaded meanwhile, so a crash at any point leaves every key unwrappable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from llmasos.config import llmasos_home
from llmasos.errors import MasterKeyError
from llmasos.storage.files import private_dir, write_private

log = logging.getLogger(__name__)

ENV_VAR = "LLMASOS_MASTER_KEY"
KEY_BYTES = 32
KEYRING_SERVICE = "llmasos"


@dataclass(frozen=True)
class MasterKey:
    key: bytes = b""
    source: str = ""  # "env", "keyring", "file", "file (rotation in progress)": never the key itself

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def __repr__(self) -> str:  # never show the key in a traceback or a log
        return f"MasterKey(id={self.key_id}, source={self.source})"


def key_id(key: bytes) -> str:
    """A public name of a key: 16 hex digits of HMAC-SHA256(key, label)."""
    return hmac.new(key, b"llmasos master key id", hashlib.sha256).hexdigest()[:16]


def keys_dir() -> Path:
    return llmasos_home() / "keys"


def key_file() -> Path:
    return keys_dir() / "master.key"


def next_key_file() -> Path:
    return keys_dir() / "master.key.next"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def decode_key(text: str, where: str) -> bytes:
    """32 key bytes from base64 or hex text; MasterKeyError naming `where` otherwise."""
    text = text.strip()
    candidates = []
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise MasterKeyError(
        f"the master key in {where} is not {KEY_BYTES} bytes as base64 or hex; "
        "make one with `llmasos keys generate`"
    )


def _keyring_name() -> str:
    return f"master-key:{llmasos_home()}"


def _from_keyring() -> MasterKey | None:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        text = keyring.get_password(KEYRING_SERVICE, _keyring_name())
    except (KeyringError, RuntimeError) as err:  # no backend on a headless machine
        log.debug("no keyring: %s", err)
        return None
    return MasterKey(decode_key(text, "the system keyring"), "keyring") if text else None


def _from_file(path: Path, source: str) -> MasterKey | None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(
            f"the master key file {path} can be read by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return MasterKey(decode_key(path.read_text(encoding="ascii"), str(path)), source)


def configured_key() -> MasterKey | None:
    """The master key from the first source that has one, or None where none has."""
    env = os.environ.get(ENV_VAR)
    if env:
        return MasterKey(decode_key(env, f"${ENV_VAR}"), "env")
    return _from_keyring() or _from_file(key_file(), "file")


def available_keys() -> dict[str, MasterKey]:
    """Every master key that can be loaded now, by id: the configured one, and a rotation's next."""
    keys = {}
    for key in (configured_key(), _from_file(next_key_file(), "file (rotation in progress)")):
        if key is not None:
            keys.setdefault(key.key_id, key)
    return keys


def current_key(*, create: bool) -> MasterKey:
    """The key new wraps use: a rotation's next key while one is under way, else the configured one.
    With `create`, a missing key is made as a 0600 key file (and said in the log), but only where no
    key was ever used here: once something is wrapped, a missing key is an error, never a fresh key
    that would leave what was wrapped under the old one behind."""
    pending = _from_file(next_key_file(), "file (rotation in progress)")
    if pending is not None:
        return pending
    key = configured_key()
    if key is not None:
        remember(key)
        return key
    used = used_key_id()
    if not create or used is not None:
        raise MasterKeyError(missing_key_message(used))
    key = MasterKey(new_key(), "file")
    store_key_file(key_file(), key.key)
    remember(key)
    log.info(
        "created a master key in %s (id %s); back it up, or move it to $%s", key_file(), key.key_id, ENV_VAR
    )
    return key


def used_key_id() -> str | None:
    """The id of the master key last used to wrap a key here (public: an id, not the key)."""
    try:
        return id_file().read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def remember(key: MasterKey) -> None:
    if used_key_id() != key.key_id:
        private_dir(id_file().parent)
        write_private(id_file(), key.key_id + "\n")


def id_file() -> Path:
    return keys_dir() / "master.id"


def store_key_file(path: Path, key: bytes) -> None:
    private_dir(path.parent)
    write_private(path, encode_key(key) + "\n")


def missing_key_message(wanted: str | None = None) -> str:
    which = f"master key {wanted}" if wanted else "a master key"
    return (
        f"{which} is needed and none was found: set ${ENV_VAR}, put it in the system keyring, or restore "
        f"{key_file()} (mode 0600); nothing was decrypted"
    )
