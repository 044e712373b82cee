"""Build the engine's int4 model straight from a GGUF file, one tensor at a time.

Why: the float32 path (loader.build_model, then LlamaModel.quantize) held a float32 copy of every
weight before packing it: 7 GB for Qwen2.5-1.5B (10 GB peak RSS against 3.9 GB after load). Here each
projection goes from the memory-mapped blocks to its packed layer directly, so a load holds at most
one projection's temporaries beyond what the model keeps:

- Projections with a part of more than 4 bits per weight in a block format (Q5_0, Q5_1, Q5_K, Q6_K,
  Q8_0) become 8-bit groups of 16 holding every part's q, d and m exactly (gguf_blocks.int8_group_values,
  group_linear.Int8GroupLinear): computed as stored, where they were re-quantized to 4 bits before. A
  float part among them (F16, BF16, F32) is rounded to those groups (int_weights.int8_group_requantize).
- Other projections are 4-bit: Q4_0, Q4_1 and Q4_K parts keep the file's own q, d and m
  (gguf_blocks.int4_groups), exact up to the kernels' integer rounding of d and m (quant_linear.Int4Linear);
  float parts are dequantized one tensor at a time and re-quantized to 4-bit groups of 32
  (int_weights.int4_requantize), as the float32 path does (an F16 model stays the size of a 4-bit one).
- Projections whose parts are all Q6_K (Qwen2.5's ffn_down in half its layers), and a Q6_K LM head, keep the
  file's 6-bit blocks (gguf_blocks.q6k_blocks, q6k_linear.Q6KLinear) where the C++ kernels run: 6.6 bits a
  weight against the 8-bit groups' 12 and the int8 head's 8 (`q6k_layer`).
- The embedding table stays in the file's integers where they are 8-bit exact (Q8_0, Q6_K; Q8Embedding),
  else float32; the LM head (or the tied table) becomes per-row int8, a slice of rows at a time. Gemma 3's
  tied Q8_0 table is held once instead, as a head of exact 8-bit groups whose rows the lookup reads
  (`shares_head_table`).

The result is what `LlamaModel.quantize("int4")` made from the float32 model, with `packed_format`
set, so quantizing it again returns it unchanged. Gemma 3 (gemma3.py) is built the same way, its QK-norm
and sandwich norms taken as the file stores them: through float32 and `quantize`, its Q5_0, Q6_K and Q8_0
projections were re-quantized to 4 bits (mean |logit error| 0.96 against transformers, 0.06 here).
"""

from __future__ import annotations

import gguf
import torch
import torch.nn.functional as F
from torch import nn

from llmasos.errors import ModelFormatError
from llmasos.model.block_layout import BLOCK_ROWS, pack_int8_blocks, pack_q6_blocks, to_row_blocks
from llmasos.model.config import ModelConfig
from llmasos.model.gemma3 import GEMMA3_LAYER_NORMS, model_class
from llmasos.model.gguf_blocks import (
    BLOCK_TYPES,
    EIGHT_BIT_TYPES,
    INT4_TYPES,
    INT8_GROUP_TYPES,
    ROWS_PER_SLICE,
    SUB_GROUP,
    dequantize,
    dequantize_rows,
    int4_groups,
    int8_group_values,
    int8_groups,
    q6k_blocks,
    tensor_shape,
)
from llmasos.model.gguf_weights import PERMUTED_QK_ARCHITECTURES, unpermute_qk
from llmasos.model.group_linear import Int8GroupLinear
from llmasos.model.int_weights import int4_requantize, int8_group_requantize
from llmasos.model.llama import LlamaModel
from llmasos.model.native import cpu_kernels
from llmasos.model.q6k_linear import SUPER_GROUP, Q6KLinear
from llmasos.model.q8_embedding import HeadRowsEmbedding, Int4Embedding, Q8Embedding, untouched_zeros
from llmasos.model.quant_linear import DEFAULT_MAX_QUANT_TOKENS, Int4Linear, Int8Linear

PACKED_FORMATS = ("int4",)


def can_build_packed(config: ModelConfig) -> bool:
    """Whether this architecture's projections fit the int4 layout (rows by 16, inputs by 32)."""
    sizes = (config.q_size + 2 * config.kv_size, config.hidden_size, 2 * config.intermediate_size)
    inputs = (config.hidden_size, config.q_size, config.intermediate_size)
    return all(n % 16 == 0 for n in sizes) and all(n % 32 == 0 for n in inputs)


def build_packed_model(
    config: ModelConfig,
    reader: gguf.GGUFReader,
    *,
    max_quant_tokens: int = DEFAULT_MAX_QUANT_TOKENS,
    keep_dense: bool = False,
) -> tuple[LlamaModel, torch.Tensor | None]:
    """(the model with int4 projections and an int8 head, the file's RoPE divisors or None)."""
    tensors = _Released(reader)
    with torch.device("meta"):
        model = model_class(config)(config)  # Gemma 3's norms and windows: gemma3.py
    pack = _Packer(config, tensors, max_quant_tokens, keep_dense)
    for i, layer in enumerate(model.layers):
        pack.layer(layer, i)
    model.norm.weight = _param(_take(tensors, "output_norm.weight"))
    embedding = _take(tensors, "token_embd.weight")
    if "output.weight" not in tensors and shares_head_table(config, embedding):
        model.logits_proj = q8_0_head(embedding, max_quant_tokens)
        model.embed_tokens = HeadRowsEmbedding(model.logits_proj)
    else:
        model.embed_tokens = _embedding(embedding, config)
        model.logits_proj = _head(tensors.pop("output.weight", None) or embedding, max_quant_tokens)
    model.lm_head = None
    rope_freqs = tensors.pop("rope_freqs.weight", None)
    tensors.release_taken()
    if tensors:
        raise ModelFormatError(
            f"model file has tensors this architecture does not use: {sorted(tensors)[:5]}"
        )
    model.packed_format = "int4"
    model._enable_native_step()  # as quantize() does for the models it converts
    return model, None if rope_freqs is None else dequantize(rope_freqs)


class _Released(dict):
    """The file's tensors by name; each one taken out is released from memory (the file's pages) once the
    next is taken, so the loader's RSS holds one tensor of the file at a time."""

    def __init__(self, reader: gguf.GGUFReader) -> None:
        super().__init__((t.name, t) for t in reader.tensors)
        self.reader = reader
        self.taken: list[gguf.ReaderTensor] = []

    def pop(self, name: str, *default: object) -> gguf.ReaderTensor:
        self.release_taken()
        tensor = super().pop(name, *default)
        if tensor is not None:
            self.taken.append(tensor)
        return tensor

    def release_taken(self) -> None:
        release = getattr(self.reader, "release_pages", None)
        for tensor in self.taken[:-1] if len(self.taken) > 1 else []:
            if release is not None:
                release(tensor)
        self.taken = self.taken[-1:]


class _Packer:
    """Fills one decoder layer at a time from the file's tensors (taking them out of `tensors`)."""

    def __init__(
        self,
        config: ModelConfig,
        tensors: dict[str, gguf.ReaderTensor],
        max_quant_tokens: int,
        keep_dense: bool,
    ) -> None:
        self.config, self.tensors = config, tensors
        self.max_quant_tokens, self.keep_dense = max_quant_tokens, keep_dense
        self.permuted = config.architecture in PERMUTED_QK_ARCHITECTURES

    def layer(self, layer: nn.Module, i: int) -> None:
        b, c = f"blk.{i}.", self.config
        layer.attn_norm.weight = _param(_take(self.tensors, b + "attn_norm.weight"))
        layer.ffn_norm.weight = _param(_take(self.tensors, b + "ffn_norm.weight"))
        heads = (c.num_heads, c.num_kv_heads, None) if self.permuted else (None, None, None)
        bias = None
        if c.attention_bias:
            parts = [
                (dequantize(_take(self.tensors, b + f"attn_{x}.bias")), h)
                for x, h in zip("qkv", heads, strict=True)
            ]
            bias = torch.cat([_unpermuted(t, h) for t, h in parts])
        projections = {
            "qkv_proj": [(b + f"attn_{x}.weight", h) for x, h in zip("qkv", heads, strict=True)],
            "o_proj": [(b + "attn_output.weight", None)],
            "gate_up_proj": [(b + "ffn_gate.weight", None), (b + "ffn_up.weight", None)],
            "down_proj": [(b + "ffn_down.weight", None)],
        }
        for name, parts in projections.items():
            expected = tuple(getattr(layer, name).weight.shape)  # the meta module's
            packed = self.linear(parts, bias if name == "qkv_proj" else None)
            if (packed.out_features, packed.in_features) != expected:
                raise ModelFormatError(
                    f"tensors of layer {i}'s {name} make shape {(packed.out_features, packed.in_features)}, "
                    f"expected {expected}"
                )
            setattr(layer, name, packed)
        if c.architecture == "gemma3":
            self.gemma3_norms(layer, i)

    def gemma3_norms(self, layer: nn.Module, i: int) -> None:
        """Gemma 3's QK-norm and sandwich norms of layer `i`, float32 as the file stores them."""
        for ours, theirs in GEMMA3_LAYER_NORMS.items():
            getattr(layer, ours).weight = _param(_take(self.tensors, f"blk.{i}.{theirs}.weight"))

    def linear(self, parts: list[tuple[str, int | None]], bias: torch.Tensor | None = None) -> nn.Module:
        """The fused projection of `parts` (name, heads to un-permute or None), stacked by rows."""
        for name, _ in parts:
            if name not in self.tensors:
                raise ModelFormatError(f"model file lacks tensor {name}")
        kinds = [self.tensors[name].tensor_type for name, _ in parts]
        unpermuted = all(heads is None for _, heads in parts)
        if unpermuted and not self.keep_dense and keeps_q6k([self.tensors[name] for name, _ in parts]):
            return q6k_layer([_take(self.tensors, name) for name, _ in parts], bias, self.max_quant_tokens)
        four_bit = not any(kind in EIGHT_BIT_TYPES for kind in kinds)
        values = int4_values if four_bit else int8_values
        groups = [values(_take(self.tensors, name), heads) for name, heads in parts]
        q, d, m = (torch.cat([g[j] for g in groups]) for j in range(3))
        kind = Int4Linear if four_bit else Int8GroupLinear
        return kind.from_groups(q, d, m, bias, self.max_quant_tokens, self.keep_dense)


def int4_values(
    tensor: gguf.ReaderTensor, heads: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, d, m) of a matrix in the 4-bit layout (the file's own for 4-bit formats, else re-quantized), rows
    un-permuted for `heads`."""
    _check_matrix(tensor)
    exact = tensor.tensor_type in INT4_TYPES
    values = int4_groups(tensor) if exact else int4_requantize(dequantize(tensor))
    return tuple(_unpermuted(v, heads) for v in values)


def int8_values(
    tensor: gguf.ReaderTensor, heads: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, d, m) of any matrix in the 8-bit grouped layout (exact for block formats), rows un-permuted."""
    _check_matrix(tensor)
    if tensor.tensor_type in BLOCK_TYPES:
        starts = range(0, tensor_shape(tensor)[0], ROWS_PER_SLICE)
        slices = [int8_group_values(tensor, slice(r, r + ROWS_PER_SLICE)) for r in starts]
        values = tuple(torch.cat([part[j] for part in slices]) for j in range(3))
    else:
        values = int8_group_requantize(dequantize(tensor))
    return tuple(_unpermuted(v, heads) for v in values)


def keeps_q6k(tensors: list[gguf.ReaderTensor], whole_blocks: bool = True) -> bool:
    """Whether these parts of one projection become a Q6KLinear: all Q6_K, inputs by 256, rows by 16 unless
    `whole_blocks` is False (the head, whose last block is padded), and the C++ kernels to run it (without
    them the 8-bit groups' float copy serves as well)."""
    if cpu_kernels() is None or any(t.tensor_type != gguf.GGMLQuantizationType.Q6_K for t in tensors):
        return False
    shapes = [tensor_shape(t) for t in tensors]
    rows_fit = (s[0] % BLOCK_ROWS == 0 or not whole_blocks for s in shapes)
    fits = (len(s) == 2 and s[1] % SUPER_GROUP == 0 for s in shapes)
    fits = (a and b for a, b in zip(fits, rows_fit, strict=True))
    return all(fits) and len({s[-1] for s in shapes}) == 1 and (whole_blocks or len(shapes) == 1)


def shares_head_table(config: ModelConfig, embedding: gguf.ReaderTensor) -> bool:
    """Whether the tied table is held once, as the head's 8-bit groups that the lookup reads too
    (q8_0_head, q8_embedding.HeadRowsEmbedding): a Q8_0 table, rows by 16, the C++ kernels, and Gemma 3,
    whose 262,144-token table is most of the model (two copies were 357 MB, one is 210 MB, and the head
    became the file's exact values at the per-row head's speed). Other models keep their two copies
    until measured: SmolLM2's head is 7 MB a token more as groups."""
    rows, cols = tensor_shape(embedding)
    return (
        config.architecture == "gemma3"
        and embedding.tensor_type == gguf.GGMLQuantizationType.Q8_0
        and rows % BLOCK_ROWS == 0
        and cols % 32 == 0
        and cpu_kernels() is not None
    )


def q8_0_head(tensor: gguf.ReaderTensor, max_quant_tokens: int) -> Int8GroupLinear:
    """The Q8_0 table as an 8-bit-group head holding the file's q and d exactly, packed a slice of rows at
    a time; its m (all zero) lies on untouched pages, so it costs no RSS."""
    rows, cols = tensor_shape(tensor)
    q = torch.empty(rows // BLOCK_ROWS, cols // 2, 2 * BLOCK_ROWS, dtype=torch.int8)
    d = torch.empty(rows // BLOCK_ROWS, cols // SUB_GROUP, BLOCK_ROWS)
    for r0 in range(0, rows, ROWS_PER_SLICE):
        part_q, part_d, _ = int8_group_values(tensor, slice(r0, r0 + ROWS_PER_SLICE))
        b0, b1 = r0 // BLOCK_ROWS, (r0 + len(part_q)) // BLOCK_ROWS
        q[b0:b1], d[b0:b1] = pack_int8_blocks(part_q), to_row_blocks(part_d)
    return Int8GroupLinear.from_packed(q, d, untouched_zeros(d.shape), None, (rows, cols), max_quant_tokens)


def q6k_layer(
    tensors: list[gguf.ReaderTensor], bias: torch.Tensor | None, max_quant_tokens: int
) -> Q6KLinear:
    """The Q6_K parts stacked by rows as one Q6KLinear, packed a slice of rows at a time (an LM head of
    151,936 rows unpacked whole would be 233 MB of temporaries); a last part short of a block of 16 rows
    is padded with zero weights, whose outputs the layer drops."""
    rows = sum(tensor_shape(t)[0] for t in tensors)
    cols = tensor_shape(tensors[0])[1]
    blocks = -(-rows // BLOCK_ROWS)
    q = torch.empty(blocks, cols // 8, 96, dtype=torch.uint8)
    sc = torch.empty(blocks, cols // 16, BLOCK_ROWS, dtype=torch.int8)
    dsup = torch.empty(blocks, cols // SUPER_GROUP, BLOCK_ROWS)
    b0 = 0
    for tensor in tensors:
        for r0 in range(0, tensor_shape(tensor)[0], ROWS_PER_SLICE):
            part_q, part_sc, part_dsup = q6k_blocks(tensor, slice(r0, r0 + ROWS_PER_SLICE))
            pad = -len(part_q) % BLOCK_ROWS
            part_q, part_sc, part_dsup = (F.pad(t, (0, 0, 0, pad)) for t in (part_q, part_sc, part_dsup))
            b1 = b0 + len(part_q) // BLOCK_ROWS
            q[b0:b1], sc[b0:b1], dsup[b0:b1] = (
                pack_q6_blocks(part_q),
                to_row_blocks(part_sc),
                to_row_blocks(part_dsup),
            )
            b0 = b1
    return Q6KLinear.from_packed(q, sc, dsup, bias, (rows, cols), max_quant_tokens)


def _head(head: gguf.ReaderTensor, max_quant_tokens: int) -> nn.Module:
    """The LM head: the file's 6-bit blocks where they fit the kernels, else per-row int8."""
    if keeps_q6k([head], whole_blocks=False):
        return q6k_layer([head], None, max_quant_tokens)
    return Int8Linear.from_rows(dequantize_rows(head), tensor_shape(head), max_quant_tokens)


def _check_matrix(tensor: gguf.ReaderTensor) -> None:
    if len(tensor_shape(tensor)) != 2:
        raise ModelFormatError(f"tensor {tensor.name} has shape {tensor_shape(tensor)}, not a matrix")


def _embedding(tensor: gguf.ReaderTensor, config: ModelConfig) -> nn.Module:
    """The lookup table: the file's integers where they are 8-bit exact, else float32."""
    expected = (config.vocab_size, config.hidden_size)
    if tensor_shape(tensor) != expected:
        raise ModelFormatError(f"token_embd.weight has shape {tensor_shape(tensor)}, expected {expected}")
    if tensor.tensor_type in INT8_GROUP_TYPES:
        return Q8Embedding(*int8_groups(tensor))
    if tensor.tensor_type in INT4_TYPES:
        return _int4_embedding(tensor, expected)
    table = torch.empty(expected)
    r0 = 0
    for part in dequantize_rows(tensor):
        table[r0 : r0 + len(part)] = part
        r0 += len(part)
    return nn.Embedding.from_pretrained(table)


def _int4_embedding(tensor: gguf.ReaderTensor, shape: tuple[int, int]) -> Int4Embedding:
    """The table a slice of rows at a time: whole, the unpacking's temporaries were ~700 MB for
    Qwen2.5-1.5B's 151,936 x 1,536 table."""
    vocab, dim = shape
    table = Int4Embedding.from_packed(
        torch.empty(vocab, dim // 2, dtype=torch.uint8),
        torch.empty(vocab, dim // 32),
        torch.empty(vocab, dim // 32),
    )
    for r0 in range(0, vocab, ROWS_PER_SLICE):
        rows = slice(r0, min(r0 + ROWS_PER_SLICE, vocab))
        part = Int4Embedding(*int4_groups(tensor, rows))
        table.packed[rows], table.d[rows], table.m[rows] = part.packed, part.d, part.m
    return table


def _unpermuted(value: torch.Tensor, heads: int | None) -> torch.Tensor:
    return value if heads is None else unpermute_qk(value, heads)


def _param(tensor: gguf.ReaderTensor) -> nn.Parameter:
    return nn.Parameter(dequantize(tensor), requires_grad=False)


def _take(tensors: dict[str, gguf.ReaderTensor], name: str) -> gguf.ReaderTensor:
    if name not in tensors:
        raise ModelFormatError(f"model file lacks tensor {name}")
    return tensors.pop(name)
