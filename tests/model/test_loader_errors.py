"""Bad model files get one clear error that names what is wrong, and nothing half-loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmasos.errors import ModelFormatError, UnsupportedModelError
from llmasos.model.loader import load_model
from tests.helpers.tiny_model import TinySpec, write_tiny_gguf


def test_truncated_gguf_is_refused_with_the_file_named(tmp_path: Path, tiny_gguf: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(ModelFormatError, match="truncated or corrupt") as err:
        load_model(cut)
    assert str(cut) in str(err.value)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("just some text")
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        load_model(fake)


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", TinySpec())
    data = path.read_bytes().replace(b"llama", b"rwkv7", 1)  # general.architecture's value
    odd = tmp_path / "odd.gguf"
    odd.write_bytes(data)
    with pytest.raises((UnsupportedModelError, ModelFormatError), match="rwkv7"):
        load_model(odd)


def test_unsupported_rope_scaling_is_named(tmp_path: Path) -> None:
    spec = TinySpec(extra_metadata={"llama.rope.scaling.type": "yarn"})
    path, _ = write_tiny_gguf(tmp_path / "m.gguf", spec)
    with pytest.raises(UnsupportedModelError, match="yarn"):
        load_model(path)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    import gguf

    from tests.helpers.tiny_tokenizer import add_tiny_tokenizer

    path = tmp_path / "partial.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    add_tiny_tokenizer(writer)
    for key, value in (
        ("block_count", 1),
        ("context_length", 64),
        ("embedding_length", 32),
        ("feed_forward_length", 64),
        ("attention.head_count", 2),
    ):
        writer.add_uint32(f"llama.{key}", value)
    import numpy as np

    writer.add_tensor("token_embd.weight", np.zeros((409, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelFormatError, match=r"output_norm\.weight"):
        load_model(path)
