"""Models stored encrypted (`llmasos models pull --encrypt`): the model file sealed in place in the
staging folder (security/sealed_file.py), and the store's encrypted files re-wrapped by a rotation.

The plaintext never lands in the store: the pull seals the staged copy to `<file>.enc` and removes
the plaintext before the staging folder is renamed into place (the staging folder is private and is
removed on any failure). The packed int4 cache beside an encrypted model is sealed too
(`<file>.enc.int4.pt.enc`, model/packed_cache.py), so a later load is as fast as for a plain model.
"""

from __future__ import annotations

from pathlib import Path

from llmasos.config import models_dir
from llmasos.security.master_key import MasterKey
from llmasos.security.sealed_file import encrypt_file, is_sealed, rewrap_header

ENCRYPTED_SUFFIX = ".enc"


def seal_model_file(staging: Path, rel: str) -> str:
    """Replace `staging/rel` with its sealed copy `staging/rel.enc`; returns the new relative path."""
    plain = staging / rel
    sealed_rel = rel + ENCRYPTED_SUFFIX
    encrypt_file(plain, staging / sealed_rel)
    plain.unlink()
    return sealed_rel


def rewrap_models(master: MasterKey, root: Path | None = None) -> int:
    """Re-wrap the file key of every sealed file in the store under `master`; how many changed."""
    root = root or models_dir()
    if not root.is_dir():
        return 0
    changed = 0
    for path in sorted(root.glob("*/*.enc")):
        if not path.parent.name.startswith(".") and is_sealed(path) and rewrap_header(path, master):
            changed += 1
    return changed
