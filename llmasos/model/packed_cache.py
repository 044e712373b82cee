"""The packed model cached on disk beside its GGUF file, read by later loads.

Why: packing Qwen2.5-1.5B from its GGUF blocks is ~40 s of CPU (and parsing the file's 150,000-token
vocabulary a few more), where llama.cpp maps the file in 0.7 s. The first packed load writes what it
made (projections in the C++ kernels' layout, the head, the embedding, norms, the architecture and the
tokenizer) to one file, `<model>.gguf.int4.pt`, atomically (a temporary file renamed into place, mode
0600); later loads read it: no GGUF parsing, no conversion. The file is a tensor file
(tensor_file.py, safetensors' layout; the name is older than the format): its data section is read
after the tokenizer is built from its metadata (not beside it: Gemma 3's tokenizer build takes 370 MB of
temporaries, which on top of the weights set the load's peak RSS; the file is read ahead meanwhile).

The cache names the file it was made from (size and modification time) and this code's layout
(`CACHE_VERSION`, the kernels' integer range); any mismatch, or an unreadable cache (a torch.save file
of version 2 included), means a fresh build that replaces it. Where the folder is not writable the
model is simply built each time.

Beside an encrypted model (`models pull --encrypt`) the cache is sealed the same way
(`<model>.gguf.enc.int4.pt.enc`, security/sealed_file.py) and decrypted in memory when read: without
it every load would parse and pack the GGUF again (seconds), and a plaintext cache would put the
weights back on disk in the clear.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import tokenizers
import torch
from torch import nn

from llmasos.model.config import ModelConfig, RopeScaling
from llmasos.model.gemma3 import GEMMA3_LAYER_NORMS, Gemma3DecoderLayer, Gemma3Model, model_class
from llmasos.model.group_linear import Int8GroupLinear
from llmasos.model.heap import trim_heap
from llmasos.model.llama import LlamaModel
from llmasos.model.q6k_linear import Q6KLinear
from llmasos.model.q8_embedding import HeadRowsEmbedding, Int4Embedding, Q8Embedding, untouched_zeros
from llmasos.model.quant_linear import Int4Linear, Int8Linear
from llmasos.model.tensor_file import (
    header_bytes,
    parse_header,
    read_header,
    read_tensors,
    tensors_in,
    write_tensor_file,
)
from llmasos.model.tokenizer import Tokenizer
from llmasos.security.sealed_buffer import SealedBuffer
from llmasos.security.sealed_file import encrypt_stream, is_sealed

logger = logging.getLogger(__name__)

# Bump whenever what is stored, or the layout of a stored tensor, changes.
# 2: 8-bit groups for parts of more than 4 bits (group_linear.py); 3: a tensor file;
# 4: Q6_K blocks kept at 6 bits (q6k_linear.py); 5: Gemma 3's RoPE frequencies instead of tables;
# 6: Gemma 3's tied Q8_0 table once, as the head's 8-bit groups
CACHE_VERSION = 6
PROJECTIONS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def cache_path(gguf_path: Path) -> Path:
    suffix = ".int4.pt.enc" if is_sealed(gguf_path) else ".int4.pt"
    return gguf_path.with_name(gguf_path.name + suffix)


def _read(
    path: Path, sealed: bool, key: dict[str, int]
) -> tuple[dict[str, Any], dict[str, torch.Tensor], tokenizers.Tokenizer] | None:
    """(stored fields, tensors, tokenizer) of the cache file `path`; None where it was made from another
    file or layout than `key` says (found from its header, before its data is used)."""
    if sealed:
        return _read_sealed(path, key)
    with open(path, "rb", buffering=0) as f:
        metadata, header = read_header(f)
        stored = json.loads(metadata.get("llmasos", "{}"))
        if stored.get("key") != key:
            return None
        # The tokenizer first, and the heap pages of its parse given back, then the weights. Built while a
        # thread read the weights, Gemma 3's (262,144 tokens, 514,906 merges) took 370 MB of temporaries
        # on top of them (it keeps 96 MB): a peak RSS of 1,241 MB against 922 MB after the load. The
        # file's pages are read ahead meanwhile, so a cold file still reads while the tokenizer builds;
        # from a warm page cache the weights' copy now follows the tokenizer (0.2-0.5 s for 0.3-0.6 GB).
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
        tokenizer = tokenizers.Tokenizer.from_str(metadata.pop("tokenizer"))
        del metadata
        trim_heap()
        return stored, read_tensors(f, header, mapped=is_sparsely_read), tokenizer


def _read_sealed(
    path: Path, key: dict[str, int]
) -> tuple[dict[str, Any], dict[str, torch.Tensor], tokenizers.Tokenizer] | None:
    """`_read` of a sealed cache: decrypted into anonymous memory on every core (sealed_buffer.py).
    The chunks holding the header are authenticated first; the others are read while the tokenizer is
    built (its build holds the GIL, the reads do not) and decrypted once it is done. A chunk that fails
    raises before any tensor exists, and the tokenizer built from the header is dropped with it."""
    with SealedBuffer(path) as plaintext:
        start = header_bytes(plaintext.prefix(8))
        metadata, header = parse_header(plaintext.prefix(start)[8:])
        stored = json.loads(metadata.get("llmasos", "{}"))
        if stored.get("key") != key:
            return None
        plaintext.start()
        tokenizer = tokenizers.Tokenizer.from_str(metadata["tokenizer"])
        return stored, tensors_in(plaintext.wait(), start, header), tokenizer


def is_sparsely_read(name: str) -> bool:
    """Whether a stored tensor is read a row at a time (the embedding table, one row per token; the
    RoPE tables, one row per position), so the load maps it instead of reading it (tensor_file.py):
    only the rows used become resident. SmolLM2's Q8_0 table is 32 MB, of which a chat touches a few
    hundred KB; Qwen2.5's RoPE tables for 32,768 positions are 32 MB."""
    return name.startswith(("embed.", "rope_"))


def cache_key(gguf_path: Path, int_max: int) -> dict[str, int]:
    """What the cache must have been made from: this file, this code's layout."""
    stat = gguf_path.stat()
    return {"version": CACHE_VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "int_max": int_max}


def load_cached(gguf_path: Path, int_max: int) -> tuple[LlamaModel, Tokenizer, ModelConfig] | None:
    """The cached packed model of `gguf_path`; None where there is no valid cache."""
    path = cache_path(gguf_path)
    if not path.is_file():
        return None
    try:
        # Read, not mapped: mapped weights are page cache the OS may evict under memory pressure, and
        # SmolLM2's decode then swung between 8 and 100 tok/s on this shared machine while the read
        # copy held 45; the engine's RSS is then what it really holds. Only the tables read a row at
        # a time are mapped (is_sparsely_read).
        read = _read(path, is_sealed(gguf_path), cache_key(gguf_path, int_max))
        if read is None:
            logger.info("packed cache %s is stale; packing %s again", path.name, gguf_path.name)
            return None
        stored, tensors, backend = read
        config = _config(stored["config"])
        return _model(config, tensors), _tokenizer(stored["tokenizer"], backend), config
    except Exception as err:  # a torn or foreign file: rebuild and replace it
        logger.warning(
            "packed cache %s could not be read (%s); packing %s again", path.name, err, gguf_path.name
        )
        return None


def save_cached(
    gguf_path: Path,
    int_max: int,
    model: LlamaModel,
    tokenizer: Tokenizer,
    config: ModelConfig,
    chat_template: str | None,
) -> str | None:
    """Write the cache atomically beside `gguf_path` (a folder that cannot be written is logged); returns
    the written file's hex sha256 (for the library's manifest), or None where nothing was written."""
    path = cache_path(gguf_path)
    stored = {
        "key": cache_key(gguf_path, int_max),
        "config": dataclasses.asdict(config),
        "tokenizer": _tokenizer_state(tokenizer, chat_template),
    }
    metadata = {"llmasos": json.dumps(stored), "tokenizer": tokenizer._backend.to_str()}
    tensors = _tensors(model)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as err:
        logger.info("not caching the packed model beside %s: %s", gguf_path, err.strerror)
        return None
    try:
        if is_sealed(gguf_path):
            os.close(fd)
            buffer = io.BytesIO()
            write_tensor_file(buffer, tensors, metadata)
            buffer.seek(0)
            encrypt_stream(buffer, Path(tmp))
        else:
            with os.fdopen(fd, "wb") as f:
                write_tensor_file(f, tensors, metadata)
                f.flush()
                os.fsync(f.fileno())
        with open(tmp, "rb") as f:  # read back from the page cache: ~1 s for Qwen2.5-1.5B's 1.4 GB, once
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as err:
        logger.warning("could not write the packed cache %s: %s", path, err)
        Path(tmp).unlink(missing_ok=True)
        return None
    return digest


def in_kernel_layout(model: LlamaModel) -> bool:
    """Whether every projection holds the C++ kernels' layout, which is what the cache stores (Llama's
    layers then also take the C++ step; Gemma 3's never do, its norms are not in it)."""
    return all(getattr(layer, name).kernels is not None for layer in model.layers for name in PROJECTIONS)


def _tensors(model: LlamaModel) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {"norm": model.norm.weight.detach()}
    for i, layer in enumerate(model.layers):
        out[f"{i}.attn_norm"], out[f"{i}.ffn_norm"] = (
            layer.attn_norm.weight.detach(),
            layer.ffn_norm.weight.detach(),
        )
        for name in PROJECTIONS:
            proj = getattr(layer, name)
            if isinstance(proj, Q6KLinear):
                q, sc, dsup, _, bias = proj.native_tensors()
                out.update({f"{i}.{name}.q6": q, f"{i}.{name}.sc": sc, f"{i}.{name}.dsup": dsup})
            elif isinstance(proj, Int8GroupLinear):
                q, d, m, _, bias = proj.native_tensors()
                out.update({f"{i}.{name}.q8": q, f"{i}.{name}.d": d, f"{i}.{name}.m": m})
            else:
                qs, k, c, row_scale, bias = proj.native_tensors()
                out.update(
                    {
                        f"{i}.{name}.qs": qs,
                        f"{i}.{name}.k": k,
                        f"{i}.{name}.c": c,
                        f"{i}.{name}.row_scale": row_scale,
                    }
                )
            if bias.numel():
                out[f"{i}.{name}.bias"] = bias
        out.update(_gemma3_layer_tensors(layer, i))
    head = model.logits_proj
    if isinstance(head, Q6KLinear):
        out["head.q6"], out["head.sc"], out["head.dsup"] = head.q, head.sc, head.dsup
    elif isinstance(head, Int8GroupLinear):  # a tied Q8_0 table held once: m is all zero, not stored
        out["head.q8"], out["head.d"] = head.q, head.d
    else:
        out["head.qweight"], out["head.scales"] = head.qweight, head.scales
    out["head.shape"] = torch.tensor([head.out_features, head.in_features])
    embed = model.embed_tokens
    if isinstance(embed, Q8Embedding):
        out["embed.q8.q"], out["embed.q8.scales"] = embed.q, embed.scales
    elif isinstance(embed, HeadRowsEmbedding):
        out["embed.from_head"] = torch.ones(1, dtype=torch.uint8)  # read from the head's tensors
    elif isinstance(embed, Int4Embedding):
        out["embed.int4.packed"], out["embed.int4.d"], out["embed.int4.m"] = embed.packed, embed.d, embed.m
    else:
        out["embed.dense"] = embed.weight.detach()
    if isinstance(model, Gemma3Model):  # no tables: its rows are computed per step from the frequencies
        out["rope_inv_freq"] = model.global_inv_freq
    else:
        out["rope_cos"], out["rope_sin"] = model.rope_cos, model.rope_sin
    return out


def _gemma3_layer_tensors(layer: nn.Module, i: int) -> dict[str, torch.Tensor]:
    """Gemma 3's extra norms of layer `i` (none for other architectures)."""
    if not isinstance(layer, Gemma3DecoderLayer):
        return {}
    return {f"{i}.{ours}": getattr(layer, ours).weight.detach() for ours in GEMMA3_LAYER_NORMS}


def _model(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> LlamaModel:
    with torch.device("meta"):
        model = model_class(config)(config, rope_tables=False)  # the stored tables are installed below
    model.norm.weight = nn.Parameter(tensors["norm"], requires_grad=False)
    for i, layer in enumerate(model.layers):
        layer.attn_norm.weight = nn.Parameter(tensors[f"{i}.attn_norm"], requires_grad=False)
        layer.ffn_norm.weight = nn.Parameter(tensors[f"{i}.ffn_norm"], requires_grad=False)
        if isinstance(layer, Gemma3DecoderLayer):
            for ours in GEMMA3_LAYER_NORMS:
                getattr(layer, ours).weight = nn.Parameter(tensors[f"{i}.{ours}"], requires_grad=False)
        for name in PROJECTIONS:
            p = f"{i}.{name}."
            shape = tuple(getattr(layer, name).weight.shape)
            bias = tensors.get(p + "bias")
            if p + "q6" in tensors:
                parts = (tensors[p + "q6"], tensors[p + "sc"], tensors[p + "dsup"])
                setattr(layer, name, Q6KLinear.from_packed(*parts, bias, shape))
            elif p + "q8" in tensors:
                parts = (tensors[p + "q8"], tensors[p + "d"], tensors[p + "m"])
                setattr(layer, name, Int8GroupLinear.from_packed(*parts, bias, shape))
            else:
                parts = (tensors[p + "qs"], tensors[p + "k"], tensors[p + "c"], tensors[p + "row_scale"])
                setattr(layer, name, Int4Linear.from_packed(*parts, bias, shape))
    out_features, in_features = (int(n) for n in tensors["head.shape"])
    if "head.q6" in tensors:
        parts = (tensors["head.q6"], tensors["head.sc"], tensors["head.dsup"])
        model.logits_proj = Q6KLinear.from_packed(*parts, None, (out_features, in_features))
    elif "head.q8" in tensors:
        q, d = tensors["head.q8"], tensors["head.d"]
        model.logits_proj = Int8GroupLinear.from_packed(
            q, d, untouched_zeros(d.shape), None, (out_features, in_features)
        )
    else:
        model.logits_proj = Int8Linear.from_packed(
            tensors["head.qweight"], tensors["head.scales"], (out_features, in_features)
        )
    model.lm_head = None
    if "embed.from_head" in tensors:
        model.embed_tokens = HeadRowsEmbedding(model.logits_proj)
    elif "embed.q8.q" in tensors:
        model.embed_tokens = Q8Embedding(tensors["embed.q8.q"], tensors["embed.q8.scales"])
    elif "embed.int4.packed" in tensors:
        model.embed_tokens = Int4Embedding.from_packed(
            tensors["embed.int4.packed"], tensors["embed.int4.d"], tensors["embed.int4.m"]
        )
    else:
        model.embed_tokens = nn.Embedding.from_pretrained(tensors["embed.dense"])
    _install_rope(model, config, tensors)
    model.packed_format = "int4"
    model._enable_native_step()
    return model


def _install_rope(model: LlamaModel, config: ModelConfig, tensors: dict[str, torch.Tensor]) -> None:
    """The stored RoPE tables (Llama's C++ step reads them whole), or Gemma 3's frequencies."""
    with torch.device("cpu"):  # the module was built on the meta device
        if isinstance(model, Gemma3Model):
            model.set_rope_inv_freq(tensors["rope_inv_freq"])
            return
        head_scale = torch.ones(config.num_heads + config.num_kv_heads, 1)  # as set_rope_inv_freq makes it
        head_scale[: config.num_heads] = config.attention_scale
    model.register_buffer("rope_cos", tensors["rope_cos"], persistent=False)
    model.register_buffer("rope_sin", tensors["rope_sin"], persistent=False)
    model.register_buffer("rope_head_scale", head_scale, persistent=False)


def _config(stored: dict[str, Any]) -> ModelConfig:
    # JSON gives lists where the config holds tuples (sliding_layers)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    return ModelConfig(**{**fields, "rope_scaling": RopeScaling(**stored["rope_scaling"])})


def _tokenizer_state(tokenizer: Tokenizer, chat_template: str | None) -> dict[str, Any]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "chat_template": chat_template,
        "vocab_size": tokenizer.vocab_size,
        "stop_token_ids": sorted(tokenizer.stop_token_ids),
        "add_bos_token": tokenizer.add_bos_token,
        "add_eos_token": tokenizer.add_eos_token,
    }


def _tokenizer(state: dict[str, Any], backend: tokenizers.Tokenizer) -> Tokenizer:
    return Tokenizer(
        backend,
        bos_token_id=state["bos_token_id"],
        eos_token_id=state["eos_token_id"],
        chat_template=state["chat_template"],
        vocab_size=state["vocab_size"],
        extra_stop_token_ids=state["stop_token_ids"],
        add_bos_token=state["add_bos_token"],
        add_eos_token=state["add_eos_token"],
    )
