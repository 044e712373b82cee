"""Load a model from the library's files (a GGUF file or a Hugging Face folder) into torch.

Both formats are first named the GGUF way (`blk.N.attn_q.weight`), then fused into the module's
parameters by one function, so the two formats cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from llmasos.errors import ModelFormatError
from llmasos.model.config import ModelConfig
from llmasos.model.gemma3 import gemma3_layer_state, model_class
from llmasos.model.gguf_weights import config_from_gguf, field_value, iter_gguf_tensors, open_gguf
from llmasos.model.layers import rope_inv_freq
from llmasos.model.llama import LlamaModel
from llmasos.model.native import cpu_kernels
from llmasos.model.packed_build import PACKED_FORMATS, build_packed_model, can_build_packed
from llmasos.model.packed_cache import cache_path, in_kernel_layout, load_cached, save_cached
from llmasos.model.tokenizer import Tokenizer
from llmasos.security.sealed_file import is_sealed, plaintext_in_memory

logger = logging.getLogger(__name__)

_HF_TO_GGUF = [
    (r"^model\.embed_tokens\.weight$", "token_embd.weight"),
    (r"^model\.norm\.weight$", "output_norm.weight"),
    (r"^lm_head\.weight$", "output.weight"),
    (r"^model\.layers\.(\d+)\.input_layernorm\.weight$", r"blk.\1.attn_norm.weight"),
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.weight$", r"blk.\1.ffn_norm.weight"),
    (r"^model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$", r"blk.\1.attn_q.\2"),
    (r"^model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)$", r"blk.\1.attn_k.\2"),
    (r"^model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)$", r"blk.\1.attn_v.\2"),
    (r"^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$", r"blk.\1.attn_output.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$", r"blk.\1.ffn_gate.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.up_proj\.weight$", r"blk.\1.ffn_up.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.down_proj\.weight$", r"blk.\1.ffn_down.weight"),
]


@dataclass
class LoadedModel:
    """A model ready for the engine: module, tokenizer, architecture, and what loading cost."""

    model: LlamaModel
    tokenizer: Tokenizer
    config: ModelConfig
    load_seconds: float
    # (file name, hex sha256) of the packed cache this load wrote beside the file, for the library's
    # manifest; None where it read one or wrote none.
    packed_cache_written: tuple[str, str] | None = None
    # Whether the model came from its packed cache (nothing was built, so no temporaries to give back).
    read_from_cache: bool = False


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is float32 on CPU (exact against references) and bfloat16 on CUDA."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ModelFormatError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return value


def load_model(
    path: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    packed_format: str | None = None,
    keep_dense: bool = False,
) -> LoadedModel:
    """Load a `.gguf` file or a Hugging Face folder (config.json + safetensors + tokenizer.json).

    packed_format="int4": a GGUF file's projections go straight into the engine's int4 layout, tensor
    by tensor (packed_build.py), with no float32 copy of the model; the model can then serve engines of
    that format only. Folders, other devices and dtypes, and shapes the layout cannot take load as floats.
    """
    start = time.perf_counter()
    path = Path(path)
    written, from_cache = None, False
    if path.is_dir():
        config, tokenizer, tensors = _read_hf_folder(path)
        model = build_model(config, tensors, dtype=dtype, device=torch.device(device))
    elif (cached := _cached_packed(path, packed_format, dtype, torch.device(device), keep_dense)) is not None:
        model, tokenizer, config = cached
        from_cache = True
    else:
        with _plaintext_path(path) as plaintext:
            reader = open_gguf(plaintext)
        config = config_from_gguf(reader)
        tokenizer = Tokenizer.from_gguf(reader)
        if _packs(packed_format, config, dtype, torch.device(device)):
            model, rope_freqs = build_packed_model(config, reader, keep_dense=keep_dense)
            _set_rope(model, config, rope_freqs, torch.device(device))
            kernels = cpu_kernels()
            if not keep_dense and kernels is not None and in_kernel_layout(model):
                template = field_value(reader, "tokenizer.chat_template")
                digest = save_cached(path, kernels.Q4_INT_MAX, model, tokenizer, config, template)
                written = None if digest is None else (cache_path(path).name, digest)
        else:
            tensors = iter_gguf_tensors(reader, config)
            model = build_model(config, tensors, dtype=dtype, device=torch.device(device))
    elapsed = time.perf_counter() - start
    logger.info("loaded %s (%s) in %.2fs", path.name, config.architecture, elapsed)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        config=config,
        load_seconds=elapsed,
        packed_cache_written=written,
        read_from_cache=from_cache,
    )


@contextlib.contextmanager
def _plaintext_path(path: Path) -> Iterator[Path]:
    """`path` itself, or for a sealed (encrypted) model its plaintext in memory only (the GGUF reader
    maps it; the map outlives the `with`)."""
    if not is_sealed(path):
        yield path
        return
    with plaintext_in_memory(path) as plaintext:
        yield plaintext


def _cached_packed(
    path: Path, packed_format: str | None, dtype: torch.dtype, device: torch.device, keep_dense: bool
) -> tuple[LlamaModel, Tokenizer, ModelConfig] | None:
    """The packed model's on-disk cache (packed_cache.py), where this load would pack and one is valid."""
    if packed_format != "int4" or keep_dense or device.type != "cpu" or dtype != torch.float32:
        return None
    kernels = cpu_kernels()
    return None if kernels is None else load_cached(path, kernels.Q4_INT_MAX)


def _packs(packed_format: str | None, config: ModelConfig, dtype: torch.dtype, device: torch.device) -> bool:
    if packed_format is None:
        return False
    if packed_format not in PACKED_FORMATS:
        raise ValueError(f"cannot load packed as {packed_format!r}; use one of {', '.join(PACKED_FORMATS)}")
    return device.type == "cpu" and dtype == torch.float32 and can_build_packed(config)


def _read_hf_folder(path: Path) -> tuple[ModelConfig, Tokenizer, Iterable[tuple[str, torch.Tensor]]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelFormatError(f"{path} has no config.json")
    try:
        config = ModelConfig.from_hf_config(json.loads(config_file.read_text()))
    except (json.JSONDecodeError, KeyError, ValueError) as err:
        raise ModelFormatError(f"{config_file} is not a valid model config ({err})") from err
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelFormatError(f"{path} has no .safetensors weight files")
    tokenizer = Tokenizer.from_hf_dir(path)

    def tensors() -> Iterable[tuple[str, torch.Tensor]]:
        for file in files:
            try:
                state = load_file(file)
            except (SafetensorError, OSError) as err:
                raise ModelFormatError(f"{file} is truncated or corrupt ({err})") from err
            for name, value in state.items():
                yield _gguf_name(name), value.float()

    return config, tokenizer, tensors()


def _gguf_name(hf_name: str) -> str:
    for pattern, replacement in _HF_TO_GGUF:
        if re.match(pattern, hf_name):
            return re.sub(pattern, replacement, hf_name)
    return hf_name  # unknown names are reported by build_model


def build_model(
    config: ModelConfig,
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> LlamaModel:
    """Create the module and fill it from GGUF-named tensors, fusing q/k/v and gate/up."""
    weights = dict(tensors)
    state = _module_state(config, weights)
    rope_freqs = weights.pop("rope_freqs.weight", None)
    if weights:
        raise ModelFormatError(
            f"model file has tensors this architecture does not use: {sorted(weights)[:5]}"
        )
    with torch.device("meta"):
        model = model_class(config)(config)
    _check_shapes(model, state)
    model.load_state_dict(
        {k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=False, assign=True
    )
    if config.tie_word_embeddings:
        model.lm_head = None
    _set_rope(model, config, rope_freqs, device)
    return model.eval()


def _module_state(config: ModelConfig, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The module's parameters by name, taken out of the GGUF-named `weights` (what is left there, the
    model does not use)."""
    state = {
        "embed_tokens.weight": _take(weights, "token_embd.weight"),
        "norm.weight": _take(weights, "output_norm.weight"),
    }
    lm_head = weights.pop("output.weight", None)
    if not config.tie_word_embeddings:
        # HF configs may untie while the file ties
        state["lm_head.weight"] = state["embed_tokens.weight"] if lm_head is None else lm_head
    for i in range(config.num_layers):
        state.update(_layer_state(config, weights, i))
    return state


def _layer_state(config: ModelConfig, weights: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Decoder layer `i`'s parameters, with q/k/v and gate/up fused as the module holds them."""
    p, b = f"layers.{i}.", f"blk.{i}."
    state = {
        p + "attn_norm.weight": _take(weights, b + "attn_norm.weight"),
        p + "ffn_norm.weight": _take(weights, b + "ffn_norm.weight"),
        p + "qkv_proj.weight": torch.cat([_take(weights, b + f"attn_{x}.weight") for x in "qkv"]),
    }
    if config.attention_bias:
        state[p + "qkv_proj.bias"] = torch.cat([_take(weights, b + f"attn_{x}.bias") for x in "qkv"])
    state[p + "o_proj.weight"] = _take(weights, b + "attn_output.weight")
    state[p + "gate_up_proj.weight"] = torch.cat(
        [_take(weights, b + "ffn_gate.weight"), _take(weights, b + "ffn_up.weight")]
    )
    state[p + "down_proj.weight"] = _take(weights, b + "ffn_down.weight")
    if config.architecture == "gemma3":
        state.update(gemma3_layer_state(weights, i, _take))
    return state


def _take(weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Remove and return the tensor `name`; ModelFormatError if the file has none."""
    if name not in weights:
        raise ModelFormatError(f"model file lacks tensor {name}")
    return weights.pop(name)


def _check_shapes(model: LlamaModel, state: dict[str, torch.Tensor]) -> None:
    """ModelFormatError naming the first tensor whose shape is not its parameter's."""
    for name, value in state.items():
        expected = _param(model, name).shape
        if value.shape != expected:
            raise ModelFormatError(
                f"tensor for {name} has shape {tuple(value.shape)}, expected {tuple(expected)}"
            )


def _set_rope(
    model: LlamaModel, config: ModelConfig, rope_freqs: torch.Tensor | None, device: torch.device
) -> None:
    """The RoPE frequencies of the config, divided by the file's own where it ships them."""
    inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)
    if rope_freqs is not None:  # llama3-style scaling shipped as per-frequency divisors
        inv_freq = inv_freq / rope_freqs.float()
    with torch.device(device):
        model.set_rope_inv_freq(inv_freq.to(device))


def _param(model: torch.nn.Module, name: str) -> torch.Tensor:
    module_name, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(module_name) if module_name else model, attr)
