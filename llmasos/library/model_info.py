"""Reading a model's metadata without loading it: GGUF files (via `gguf.GGUFReader`) and Hugging Face
folders (config.json + safetensors headers + tokenizer files).

Everything here also validates: a file that cannot be what it claims raises ModelFormatError naming
the file and the problem, never a raw struct/ValueError. Whether LLMasOS can *run* the architecture is
the model loader's concern; here it is only recorded.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmasos.errors import ModelFormatError, ModelSourceError

GGUF_MAGIC = b"GGUF"
# Tensor types that hold plain floats; anything else in a GGUF is a quantized block format.
_FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}
# The files of a Hugging Face folder that the library stores: the required ones, then what is copied
# when present. Weights (*.safetensors) are found by pattern.
HF_REQUIRED = ("config.json", "tokenizer.json")
HF_OPTIONAL = (
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
)
# A safetensors header larger than this is not a real header (the format caps it at 100 MB).
_MAX_SAFETENSORS_HEADER = 100_000_000


@dataclass(frozen=True)
class ModelInfo:
    """What a model file or folder says about itself."""

    architecture: str
    format: str  # "gguf" | "safetensors"
    parameter_count: int
    quantization: str
    context_length: int | None
    license: str | None  # None when the model does not say
    has_chat_template: bool
    display_name: str | None  # GGUF general.name or the folder name, to derive a library name from


def _field(reader: Any, key: str) -> Any:
    """A GGUF metadata value (str/int/float/list) or None when the key is absent."""
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _gguf_quantization(reader: Any) -> str:
    """`general.file_type` by name ("MOSTLY_Q4_1" -> "Q4_1"), else the most common quantized tensor type."""
    import gguf

    file_type = _field(reader, "general.file_type")
    if isinstance(file_type, int):
        try:
            name = gguf.LlamaFileType(file_type).name
        except ValueError:
            name = None
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    types = Counter(t.tensor_type.name for t in reader.tensors)
    quantized = Counter({k: v for k, v in types.items() if k not in _FLOAT_TYPES})
    return (quantized or types).most_common(1)[0][0]


def inspect_gguf(path: Path, shown_as: str | None = None) -> ModelInfo:
    """Open a GGUF file, check it is whole, and read its metadata. Raises ModelFormatError if not.

    `shown_as` names the file in error messages when `path` is a staging copy the user never saw.
    """
    where = shown_as or str(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ModelSourceError(f"{where}: cannot read ({err.strerror or err})") from err
    if magic != GGUF_MAGIC:
        raise ModelFormatError(
            f"{where}: not a GGUF file (it starts with {magic!r}, a GGUF file starts with b'GGUF')"
        )
    import gguf  # imported here: the reader pulls in numpy machinery that only pulls need

    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # the reader signals damage with whatever numpy/struct raised first
        raise ModelFormatError(
            f"{where}: truncated or corrupt GGUF file ({size} bytes): {type(err).__name__}: {err}"
        ) from err
    try:
        arch = _field(reader, "general.architecture")
        if not isinstance(arch, str) or not arch:
            raise ModelFormatError(f"{where}: GGUF file has no general.architecture")
        if not reader.tensors:
            raise ModelFormatError(f"{where}: GGUF file holds no tensors")
        # The reader maps tensor data lazily; check the last byte of every tensor lies in the file.
        end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
        if end > size:
            raise ModelFormatError(f"{where}: truncated GGUF file: tensors end at byte {end} of {size}")
        context = _field(reader, f"{arch}.context_length")
        license_ = _field(reader, "general.license")
        name = _field(reader, "general.name")
        return ModelInfo(
            architecture=arch,
            format="gguf",
            parameter_count=sum(int(t.n_elements) for t in reader.tensors),
            quantization=_gguf_quantization(reader),
            context_length=int(context) if isinstance(context, int) else None,
            license=license_ if isinstance(license_, str) and license_ else None,
            has_chat_template=bool(_field(reader, "tokenizer.chat_template")),
            display_name=name if isinstance(name, str) and name else None,
        )
    finally:
        del reader  # drop the memory map before the caller moves the file


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelFormatError(f"{path}: not a safetensors file ({size} bytes, no header)")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise ModelFormatError(f"{path}: truncated or corrupt safetensors header (length {length})")
            header = json.loads(f.read(length))
    except OSError as err:
        raise ModelSourceError(f"{path}: cannot read ({err.strerror or err})") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{path}: corrupt safetensors header: {err}") from err
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            ok = 0 <= begin <= end <= data_size and isinstance(entry["dtype"], str)
            math.prod(entry["shape"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFormatError(f"{path}: corrupt safetensors entry for tensor {name!r}") from err
        if not ok:
            raise ModelFormatError(f"{path}: truncated safetensors file: tensor {name!r} lies past its end")
    return header


def hf_folder_files(folder: Path) -> list[str]:
    """The files of a Hugging Face folder to store (relative paths), or ModelSourceError naming what lacks."""
    if not folder.is_dir():
        raise ModelSourceError(f"{folder}: not a folder")
    weights = sorted(p.name for p in folder.glob("*.safetensors") if p.is_file())
    missing = [name for name in HF_REQUIRED if not (folder / name).is_file()]
    if not weights:
        missing.append("*.safetensors (the weights)")
    if missing:
        raise ModelSourceError(
            f"{folder}: not a Hugging Face model folder: missing {', '.join(missing)} "
            "(a folder needs config.json, *.safetensors and tokenizer.json)"
        )
    optional = [name for name in HF_OPTIONAL if (folder / name).is_file()]
    return sorted({*HF_REQUIRED, *weights, *optional})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return data


def _readme_license(folder: Path) -> str | None:
    """`license:` from a model card's YAML front matter (Hugging Face convention), if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    match = re.search(r"^license:\s*['\"]?([^'\"\n]+)", front, re.MULTILINE)
    return match.group(1).strip() if match else None


def inspect_hf_folder(folder: Path, files: list[str] | None = None) -> ModelInfo:
    """Read config.json and safetensors headers of a Hugging Face folder, validating them."""
    files = files if files is not None else hf_folder_files(folder)
    config = _read_json(folder / "config.json")
    _read_json(folder / "tokenizer.json")  # the tokenizer must at least parse; the loader checks the rest
    arch = config.get("model_type") or (config.get("architectures") or [None])[0]
    if not isinstance(arch, str) or not arch:
        raise ModelFormatError(f"{folder / 'config.json'}: no model_type or architectures")
    params_by_dtype: Counter[str] = Counter()
    for rel in files:
        if rel.endswith(".safetensors"):
            for name, entry in read_safetensors_header(folder / rel).items():
                if name != "__metadata__":
                    params_by_dtype[entry["dtype"]] += math.prod(entry["shape"])
    if not params_by_dtype:
        raise ModelFormatError(f"{folder}: the safetensors files hold no tensors")
    context = next(
        (config[k] for k in ("max_position_embeddings", "n_positions", "max_seq_len") if k in config), None
    )
    tokenizer_config = folder / "tokenizer_config.json"
    has_template = (folder / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file() and bool(_read_json(tokenizer_config).get("chat_template"))
    )
    return ModelInfo(
        architecture=arch,
        format="safetensors",
        parameter_count=sum(params_by_dtype.values()),
        # The dtype holding most parameters: a BF16 model with a few F32 norms is "BF16".
        quantization=params_by_dtype.most_common(1)[0][0],
        context_length=int(context) if isinstance(context, int) else None,
        license=_readme_license(folder),
        has_chat_template=has_template,
        display_name=folder.resolve().name,
    )
