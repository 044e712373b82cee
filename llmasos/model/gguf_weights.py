"""Read a GGUF file: its architecture (ModelConfig) and its tensors, dequantized into torch.

GGUF stores llama's Q and K projection rows permuted for llama.cpp's interleaved RoPE; the loader
undoes that so the model can use the usual "rotate half" RoPE. Without it the model answers with
garbled text and no error, so the permutation is covered by a test against transformers.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import torch

from llmasos.errors import ModelFormatError, UnsupportedModelError
from llmasos.model.config import ModelConfig, RopeScaling, gemma3_fields

#: Architectures whose GGUF conversion permuted Q/K rows (llama.cpp's "normal" RoPE type).
PERMUTED_QK_ARCHITECTURES = ("llama", "mistral")

_GGUF_MAGIC = b"GGUF"


class _PlainArrayReader(gguf.GGUFReader):
    """gguf's reader over a plain ndarray view of its memory map instead of the `np.memmap` itself.

    Why: the reader slices its data once per metadata value (SmolLM2's 49,152 tokens and 48,900 merges
    are ~250,000 slices), and every slice of an `np.memmap` runs its Python-level `__getitem__` and
    `__array_finalize__`; over a plain view, opening SmolLM2's file took 1.7-2.3 s instead of 3.5-5.0 s,
    with the same fields and tensors. The view keeps the map alive."""

    @property
    def data(self) -> np.ndarray:
        return self._plain_data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        if isinstance(value, np.memmap):
            self._memmap = value  # for release_pages
        self._plain_data = value.view(np.ndarray) if isinstance(value, np.memmap) else value

    def release_pages(self, tensor: gguf.ReaderTensor) -> None:
        """Drop `tensor`'s pages of the file from this process's memory (MADV_DONTNEED; the OS's page
        cache keeps them, and a later read faults them back in).

        Why: a mapped page the loader has read counts in its RSS until the map closes, so converting a
        model tensor by tensor still peaked at the steady state plus the whole file (1.1 GB for
        Qwen2.5-1.5B) without this."""
        raw = getattr(getattr(self, "_memmap", None), "_mmap", None)
        if raw is None or not hasattr(raw, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = tensor.data_offset // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(tensor.data_offset + int(tensor.n_bytes), len(raw))
        if end > start:
            raw.madvise(mmap.MADV_DONTNEED, start, end - start)

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list, list[int], list]:
        """Metadata arrays of numbers or strings read whole, not one numpy view per element.

        Why: gguf's reader parses an array element by element (Gemma 3's 262,144 tokens, scores and
        types are ~790,000 views), which took 16 s of a 28 s load of Gemma 3 270M. Numbers become one
        view of the map; strings are decoded in one pass. Other types (nested arrays, a byte-swapped
        file) keep gguf's own path."""
        if raw_type != gguf.GGUFValueType.ARRAY or self.byte_order != "I":
            return super()._get_field_parts(orig_offs, raw_type)
        raw_item_type = self._get(orig_offs, np.uint32)
        length = self._get(orig_offs + 4, np.uint64)
        item_type = gguf.GGUFValueType(int(raw_item_type[0]))
        start = orig_offs + 12
        types = [gguf.GGUFValueType.ARRAY, item_type]
        numpy_type = self.gguf_scalar_to_np.get(item_type)
        if numpy_type is not None:
            values = self._get(start, numpy_type, int(length[0]))
            if len(values) != int(length[0]):
                raise ValueError(f"array at offset {orig_offs} runs past the end of the file")
            return 12 + int(values.nbytes), [raw_item_type, length, values], [2], types
        if item_type == gguf.GGUFValueType.STRING:
            strings = _decode_strings(self.data, start, int(length[0]))
            return 12 + strings.nbytes, [raw_item_type, length, strings], [2], types
        return super()._get_field_parts(orig_offs, raw_type)

    def _push_field(self, field: gguf.ReaderField, skip_sum: bool = False) -> int:
        if field.types[-1:] == [gguf.GGUFValueType.STRING] and isinstance(field.parts[-1], _DecodedStrings):
            field = _StringArrayField(*field)
        return super()._push_field(field, skip_sum)


class _DecodedStrings(list):
    """The strings of one metadata array, decoded; `nbytes` is their size in the file."""

    nbytes: int = 0


class _StringArrayField(gguf.ReaderField):
    """A metadata array of strings whose values were decoded at read time (see `_get_field_parts`)."""

    __slots__ = ()

    def contents(self, index_or_slice: int | slice = slice(None)) -> object:
        return self.parts[-1][index_or_slice]


def _decode_strings(data: np.ndarray, start: int, count: int) -> _DecodedStrings:
    """`count` GGUF strings (a little-endian uint64 length, then UTF-8 bytes) from `start` in `data`."""
    view = memoryview(data)
    read_length = struct.Struct("<Q").unpack_from
    strings = _DecodedStrings()
    offset = start
    for _ in range(count):
        (size,) = read_length(view, offset)
        end = offset + 8 + size
        if end > len(view):
            raise ValueError(f"string at offset {offset} runs past the end of the file")
        strings.append(str(view[offset + 8 : end], "utf-8"))
        offset = end
    strings.nbytes = offset - start
    return strings


def open_gguf(path: Path) -> gguf.GGUFReader:
    """Open a GGUF file, turning every way it can be malformed into one clear error."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ModelFormatError(f"cannot read {path}: {err.strerror}") from err
    if magic != _GGUF_MAGIC:
        raise ModelFormatError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        return _PlainArrayReader(path)
    except (ValueError, struct.error, IndexError, KeyError, OverflowError, TypeError) as err:
        raise ModelFormatError(
            f"{path} is a truncated or corrupt GGUF file ({err}); pull the model again"
        ) from err


def field_value(reader: gguf.GGUFReader, key: str, default: object = None) -> object:
    """The decoded value of a metadata key, or `default` when absent."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def config_from_gguf(reader: gguf.GGUFReader) -> ModelConfig:
    """The model's architecture, from GGUF metadata keys `{arch}.*`."""
    arch = field_value(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ModelFormatError("GGUF file has no general.architecture key")

    def get(key: str, default: object = None) -> object:
        return field_value(reader, f"{arch}.{key}", default)

    tensor_names = {t.name for t in reader.tensors}
    try:
        hidden = int(get("embedding_length"))
        num_heads = int(get("attention.head_count"))
        num_kv_heads = get("attention.head_count_kv", num_heads)
        if isinstance(num_kv_heads, list):  # per-layer list in some files; ours must be uniform
            if len(set(num_kv_heads)) != 1:
                raise UnsupportedModelError("per-layer KV head counts differ; not supported")
            num_kv_heads = num_kv_heads[0]
        vocab = get("vocab_size") or len(field_value(reader, "tokenizer.ggml.tokens", []) or [])
        head_dim = get("attention.key_length") or get("rope.dimension_count") or hidden // num_heads
        scaling_type = get("rope.scaling.type", "none")
        scaling = RopeScaling(
            type=scaling_type,
            factor=float(get("rope.scaling.factor", 1.0) or 1.0),
            original_context_length=int(get("rope.scaling.original_context_length", 8192) or 8192),
        )
        return ModelConfig(
            architecture=arch,
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length")),
            num_layers=int(get("block_count")),
            num_heads=num_heads,
            num_kv_heads=int(num_kv_heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            context_length=int(get("context_length", 2048)),
            tie_word_embeddings="output.weight" not in tensor_names,
            attention_bias="blk.0.attn_q.bias" in tensor_names,
            **(gemma3_fields(get, int(get("block_count")), hidden, num_heads) if arch == "gemma3" else {}),
        )
    except TypeError as err:  # int(None): a required key is missing
        raise ModelFormatError(f"GGUF file lacks a required {arch}.* metadata key ({err})") from err


def _dequantize(tensor: gguf.ReaderTensor) -> torch.Tensor:
    qtype = tensor.tensor_type
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dims innermost first
    try:
        if qtype == gguf.GGMLQuantizationType.F32:
            array = np.asarray(tensor.data, dtype=np.float32)
        else:
            array = gguf.quants.dequantize(tensor.data, qtype)
    except NotImplementedError as err:
        raise UnsupportedModelError(
            f"tensor {tensor.name} uses quantization {qtype.name}, which cannot be dequantized; "
            "convert the model to F16, Q8_0, Q4_K or Q6_K"
        ) from err
    except ValueError as err:
        raise ModelFormatError(f"tensor {tensor.name} is corrupt or truncated ({err})") from err
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not array.flags.writeable:  # F32 tensors come straight from the read-only memory map
        array = array.copy()
    return torch.from_numpy(array).reshape(shape)


def unpermute_qk(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's per-head interleave of rotary rows (weights (out, in) or biases (out,))."""
    head_dim = weight.shape[0] // num_heads
    rest = weight.shape[1:]
    return (
        weight.reshape(num_heads, head_dim // 2, 2, *rest)  # GGUF: pairs interleaved
        .transpose(1, 2)  # (num_heads, 2, head_dim/2, ...): halves, as "rotate half" expects
        .reshape(weight.shape)
    )


def iter_gguf_tensors(reader: gguf.GGUFReader, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF tensor name, float32 tensor) pairs, Q/K rows un-permuted where the format permuted them."""
    permuted = config.architecture in PERMUTED_QK_ARCHITECTURES
    for tensor in reader.tensors:
        value = _dequantize(tensor)
        if permuted and tensor.name.endswith(("attn_q.weight", "attn_q.bias")):
            value = unpermute_qk(value, config.num_heads)
        elif permuted and tensor.name.endswith(("attn_k.weight", "attn_k.bias")):
            value = unpermute_qk(value, config.num_kv_heads)
        yield tensor.name, value
