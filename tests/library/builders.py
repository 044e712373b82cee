"""Tiny model files for tests: a GGUF of two small tensors, a Hugging Face folder, a model wheel."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
# Parameters in the tiny GGUF: a 4x64 Q8_0 matrix plus a 64-vector of F32.
TINY_GGUF_PARAMS = 4 * 64 + 64


def write_tiny_gguf(
    path: Path,
    *,
    name: str | None = "Tiny Test",
    context_length: int | None = 256,
    license: str | None = "mit",
    chat_template: str | None = CHAT_TEMPLATE,
    file_type: gguf.LlamaFileType | None = gguf.LlamaFileType.MOSTLY_Q8_0,
    seed: int = 0,
) -> Path:
    """A valid GGUF (arch llama) with one Q8_0 and one F32 tensor; `seed` varies its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "llama")
    if name is not None:
        writer.add_name(name)
    if context_length is not None:
        writer.add_context_length(context_length)
    if license is not None:
        writer.add_license(license)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if file_type is not None:
        writer.add_file_type(file_type)
    weight = rng.standard_normal((4, 64)).astype(np.float32)
    quantized = gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", rng.standard_normal(64).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_hf_folder(
    folder: Path, *, config: bool = True, weights: bool = True, tokenizer: bool = True, chat: bool = True
) -> Path:
    """A Hugging Face style folder; the flags leave parts out to test validation."""
    folder.mkdir(parents=True, exist_ok=True)
    if config:
        cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "max_position_embeddings": 512}
        (folder / "config.json").write_text(json.dumps(cfg))
    if weights:
        save_file(
            {
                "model.embed_tokens.weight": np.zeros((10, 8), dtype=np.float16),
                "model.norm.weight": np.ones(8, dtype=np.float32),
            },
            str(folder / "model.safetensors"),
        )
    if tokenizer:
        tok = Tokenizer(WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
        tok.pre_tokenizer = Whitespace()
        tok.save(str(folder / "tokenizer.json"))
    if chat:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    (folder / "notes.txt").write_text("not a model file; must not be copied")
    return folder


def write_model_wheel(path: Path, members: dict[str, bytes], license: str | None = "MIT") -> Path:
    """A wheel-shaped zip holding `members` (e.g. a GGUF) plus a METADATA file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = "Metadata-Version: 2.1\nName: tiny-model\nVersion: 1.0\n"
    if license is not None:
        metadata += f"License: {license}\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("tiny_model-1.0.dist-info/METADATA", metadata)
    return path


def write_installable_wheel(
    folder: Path, package: str, version: str, members: dict[str, bytes], *, license: str | None = None
) -> Path:
    """A wheel pip accepts from `--find-links` (name, version, METADATA, WHEEL, RECORD); members stored
    uncompressed, so flipping one of their bytes is a CRC error on read rather than a broken stream."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = package.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
    if license is not None:
        metadata += f"License: {license}\n"
    files = {
        **members,
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]).encode()
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path
