"""Metadata read by `open_gguf` (arrays read whole) equals what gguf's own reader decodes."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from llmasos.errors import ModelFormatError
from llmasos.model.gguf_weights import open_gguf
from tests.helpers.tiny_model import write_tiny_gguf


def _write_arrays(path: Path) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_array("test.strings", ["a", "", "▁▁", "é漢字", "<|im_end|>"])
    writer.add_array("test.floats", [0.5, -1.25, 3.0])
    writer.add_array("test.ints", [1, -2, 3])
    writer.add_array("test.empty", [])
    writer.add_string("test.string", "plain")
    writer.add_uint32("test.scalar", 7)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_every_field_equals_ggufs_own_reading(tmp_path: Path) -> None:
    arrays = tmp_path / "arrays.gguf"
    _write_arrays(arrays)
    model, _ = write_tiny_gguf(tmp_path / "tiny.gguf")
    for path in (arrays, model):
        ours, theirs = open_gguf(path), gguf.GGUFReader(path)
        assert list(ours.fields) == list(theirs.fields)
        for name, field in theirs.fields.items():
            assert ours.fields[name].contents() == field.contents(), name
            assert ours.fields[name].types == field.types, name
        placed = [(t.name, t.data_offset) for t in theirs.tensors]
        assert [(t.name, t.data_offset) for t in ours.tensors] == placed
    assert open_gguf(arrays).fields["test.strings"].contents() == ["a", "", "▁▁", "é漢字", "<|im_end|>"]


def test_a_string_array_cut_short_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "arrays.gguf"
    _write_arrays(path)
    data = path.read_bytes()
    cut = data.index("é漢字".encode()) + 2  # inside the fourth string
    path.write_bytes(data[:cut])
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        open_gguf(path)
