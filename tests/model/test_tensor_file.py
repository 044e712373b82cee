"""The packed cache's tensor file: the safetensors library reads what it writes, and it reads back every
tensor exactly, each on a 64-byte boundary, in memory of its own; a truncated file is an error."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors import safe_open

from llmasos.model.tensor_file import ALIGNMENT, read_header, read_tensors, write_tensor_file
from tests.helpers.memory_maps import mapping_of


def _tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "odd.u8": torch.randint(0, 255, (3, 5), dtype=torch.uint8),  # 15 bytes: the next needs padding
        "f32": torch.randn(7, 3),
        "bf16": torch.randn(9).to(torch.bfloat16),
        "i32": torch.randint(-(2**31), 2**31 - 1, (4, 2), dtype=torch.int32),
        "i8": torch.randint(-128, 127, (33,), dtype=torch.int8),
        "i64": torch.tensor([2, 3]),
        "empty": torch.empty(0, 4),
        "strided": torch.randn(4, 6)[:, ::2],  # not contiguous: written as its values
    }


def _write(path, tensors, metadata) -> None:
    with open(path, "wb") as f:
        write_tensor_file(f, tensors, metadata)


def test_safetensors_reads_the_file_and_so_does_read_tensors(tmp_path) -> None:
    tensors, metadata = _tensors(), {"llmasos": '{"key": 1}', "tokenizer": "x" * 1000}
    path = tmp_path / "t.st"
    _write(path, tensors, metadata)
    with safe_open(str(path), framework="pt") as reference:
        assert reference.metadata() == metadata
        for name, tensor in tensors.items():
            assert torch.equal(reference.get_tensor(name), tensor)
    with open(path, "rb", buffering=0) as f:
        read_metadata, header = read_header(f)
        read = read_tensors(f, header)
    assert read_metadata == metadata and set(read) == set(tensors)
    for name, tensor in tensors.items():
        assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor)
        if read[name].numel():
            assert read[name].data_ptr() % ALIGNMENT == 0
    read["f32"][0, 0] = 42.0  # its own memory, writable; the file is unchanged
    with safe_open(str(path), framework="pt") as reference:
        assert torch.equal(reference.get_tensor("f32"), tensors["f32"])


def test_a_truncated_file_is_an_error() -> None:
    buffer = io.BytesIO()
    write_tensor_file(buffer, _tensors(), {})
    data = buffer.getvalue()
    with pytest.raises(ValueError, match="truncated"):
        file = io.BytesIO(data[:-10])
        read_tensors(file, read_header(file)[1])
    with pytest.raises(ValueError, match="truncated"):
        read_header(io.BytesIO(data[:20]))


def test_a_dtype_the_file_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="complex64"):
        write_tensor_file(io.BytesIO(), {"c": torch.zeros(2, dtype=torch.complex64)}, {})


def test_mapped_tensors_are_views_of_the_file_the_others_are_read(tmp_path) -> None:
    tensors = _tensors()
    path = tmp_path / "t.st"
    _write(path, tensors, {})
    with open(path, "rb", buffering=0) as f:
        header = read_header(f)[1]
        read = read_tensors(f, header, mapped=lambda name: name in ("f32", "i8"))
    assert set(read) == set(tensors)
    for name, tensor in tensors.items():
        assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor), name
    assert mapping_of(read["f32"].data_ptr()) == str(path)
    assert mapping_of(read["i8"].data_ptr()) == str(path)
    assert mapping_of(read["bf16"].data_ptr()) in ("", "/dev/zero")  # read into anonymous memory
    read["f32"][0, 0] = 42.0  # a private map: writes never reach the file
    with open(path, "rb", buffering=0) as f:
        assert torch.equal(read_tensors(f, read_header(f)[1])["f32"], tensors["f32"])


def test_a_mapped_tensor_past_the_files_end_is_an_error(tmp_path) -> None:
    path = tmp_path / "t.st"
    _write(path, _tensors(), {})
    path.write_bytes(path.read_bytes()[:-10])  # the last tensor ("strided") is cut short
    with open(path, "rb", buffering=0) as f, pytest.raises(ValueError, match="truncated"):
        read_tensors(f, read_header(f)[1], mapped=lambda name: name == "strided")
