"""A file of named tensors in the safetensors layout, written streaming and read with one `readinto`.

Why not `torch.save`/`torch.load`: reading Qwen2.5-1.5B's packed model (1.4 GB, 513 tensors) from the
page cache took 2.7 s through torch's zip reader and weights-only unpickler (a copy per record at
~0.6 GB/s); one `readinto` of the whole data section into anonymous memory, with every tensor a view
of it, is a sequential copy. Why not `safetensors.torch.load_file`: it maps the file, and mapped
weights are page cache the OS may drop under memory pressure (SmolLM2's decode then swung between 8
and 100 tok/s on a shared machine); and its `save_file` makes a bytes copy of every tensor first.

The layout is safetensors' own (an 8-byte little-endian header length, a JSON header of
`{name: {dtype, shape, data_offsets}}` plus `__metadata__` of strings, then the data), so the
`safetensors` library reads these files too (the tests check that it does). Each tensor starts on a
64-byte boundary of the file: the gaps are filled by small padding tensors (`__pad.N`), because the
format allows no holes in the data.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Callable, Iterable
from typing import BinaryIO

import torch

ALIGNMENT = 64
_PAD_PREFIX = "__pad."
_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_TORCH_DTYPES = {name: dtype for dtype, name in _DTYPES.items()}


def write_tensor_file(out: BinaryIO, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` (any dtypes of `_DTYPES`) and string `metadata` to the binary stream `out`."""
    header: dict[str, object] = {"__metadata__": metadata}
    order: list[torch.Tensor | int] = []  # each tensor, or a count of padding bytes
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPES:
            raise ValueError(f"tensor {name} has dtype {tensor.dtype}, which this file cannot hold")
        if offset % ALIGNMENT:
            pad = ALIGNMENT - offset % ALIGNMENT
            header[f"{_PAD_PREFIX}{len(order)}"] = _entry("U8", [pad], offset, pad)
            order.append(pad)
            offset += pad
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = _entry(_DTYPES[tensor.dtype], list(tensor.shape), offset, nbytes)
        order.append(tensor)
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    # Spaces after the JSON (which the format allows) put the data section on a 64-byte boundary.
    text += b" " * (-(8 + len(text)) % ALIGNMENT)
    out.write(struct.pack("<Q", len(text)))
    out.write(text)
    for item in order:
        if isinstance(item, int):
            out.write(bytes(item))
        elif item.numel():
            out.write(memoryview(item.detach().contiguous().view(-1).view(torch.uint8).numpy()))


def _entry(dtype: str, shape: list[int], offset: int, nbytes: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}


def read_header(file: BinaryIO) -> tuple[dict[str, str], dict[str, dict]]:
    """(metadata, the tensors' entries) of a file written by `write_tensor_file`, read from its start;
    the file is left at its data section (for `read_tensors`). ValueError where it is no such file."""
    length = header_bytes(_read_exactly(file, 8)) - 8
    return parse_header(_read_exactly(file, length))


def header_bytes(first_eight: bytes) -> int:
    """How many bytes from the file's start hold its header (the data section starts there), from
    its first 8 bytes. ValueError where it is no tensor file."""
    (length,) = struct.unpack("<Q", bytes(first_eight[:8]))
    if length > 256 * 2**20:
        raise ValueError(f"header of {length} bytes: not a tensor file")
    return 8 + length


def parse_header(text: bytes | memoryview) -> tuple[dict[str, str], dict[str, dict]]:
    """(metadata, the tensors' entries) of the header's JSON (the bytes after the first 8)."""
    header = json.loads(bytes(text))
    metadata = header.pop("__metadata__", {}) or {}
    return metadata, header


def read_tensors(
    file: BinaryIO, header: dict[str, dict], mapped: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of `header` (from `read_header`), read from the data section where `file` stands:
    views of one block of anonymous memory (not page cache the OS could drop and read back). Most of
    the time is one `readinto`, which releases the GIL. ValueError where the file is truncated.

    Tensors whose name `mapped` accepts are not read: they are views of a private map of the file,
    so only the pages a reader touches become resident. Why: an embedding table is read one row per
    token, and reading it whole made SmolLM2's 32 MB table resident where a few thousand rows are
    ever used (llama.cpp maps its file the same way). Its pages are clean page cache the OS may drop
    and read back, which costs a lookup a disk read at worst; the projections, read whole every
    step, are never mapped (decode swung between 8 and 100 tok/s when they were)."""
    size = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    wanted = {name: entry for name, entry in header.items() if mapped is None or not mapped(name)}
    data = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # see allocate_kv_pool
    view = memoryview(data)
    data_start = file.tell() if len(wanted) < len(header) else 0
    for lo, hi in _spans(wanted.values()):
        if len(wanted) < len(header):
            file.seek(data_start + lo)
        _read_into(file, view, lo, hi, size)
    view.release()
    tensors = tensors_in(data, 0, wanted)
    if len(wanted) < len(header):
        tensors.update(
            _mapped_tensors(file, data_start, {k: v for k, v in header.items() if k not in wanted})
        )
    return tensors


def _spans(entries: Iterable[dict]) -> list[tuple[int, int]]:
    """The data section's byte ranges holding `entries`, sorted, touching ones merged."""
    spans: list[tuple[int, int]] = []
    for lo, hi in sorted(tuple(entry["data_offsets"]) for entry in entries):
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(hi, spans[-1][1]))
        elif hi > lo:
            spans.append((lo, hi))
    return spans


def _read_into(file: BinaryIO, view: memoryview, lo: int, hi: int, size: int) -> None:
    done = lo
    while done < hi:
        count = file.readinto(view[done:hi])
        if not count:
            raise ValueError(f"data section ends after {done} of {size} bytes: the file is truncated")
        done += count


def _mapped_tensors(file: BinaryIO, data_start: int, entries: dict[str, dict]) -> dict[str, torch.Tensor]:
    """`entries`' tensors as views of a private (copy-on-write) map of the whole file (ValueError, from
    `tensors_in`, where the file is too short for them)."""
    pages = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    return tensors_in(pages, data_start, entries)


def tensors_in(data: mmap.mmap, data_start: int, header: dict[str, dict]) -> dict[str, torch.Tensor]:
    """The tensors of `header`, as views of `data` whose data section starts at byte `data_start`
    (a whole file decrypted into memory, say). ValueError where `data` is too short for them."""
    size = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if data_start + size > len(data):
        raise ValueError(f"data section ends after {len(data) - data_start} of {size} bytes: truncated")
    return {
        name: _view(data, entry, data_start)
        for name, entry in header.items()
        if not name.startswith(_PAD_PREFIX)
    }


def _view(data: mmap.mmap, entry: dict, data_start: int) -> torch.Tensor:
    dtype = _TORCH_DTYPES[entry["dtype"]]
    start, end = (data_start + offset for offset in entry["data_offsets"])
    shape = entry["shape"]
    count = (end - start) // torch.empty((), dtype=dtype).element_size()
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(data, dtype=dtype, count=count, offset=start).view(shape)


def _read_exactly(file: BinaryIO, n: int) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise ValueError(f"expected {n} bytes, found {len(data)}: the file is truncated")
    return data
