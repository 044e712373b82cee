"""A tiny random Llama-family model written to disk by the tests, through the real file formats.

`write_tiny_gguf` writes what llama.cpp's converter would: GGUF names, llama's Q/K rows permuted for
interleaved RoPE, optional quantization. `write_tiny_hf_folder` writes the same weights the Hugging
Face way (config.json + safetensors + tokenizer.json), so transformers can serve as the reference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from tests.helpers.q6k_blocks import quantize_q6_k
from tests.helpers.tiny_tokenizer import add_tiny_tokenizer


@dataclass(frozen=True)
class TinySpec:
    architecture: str = "llama"  # llama or qwen2
    hidden: int = 64
    ffn: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    context: int = 256
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    seed: int = 0
    qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32
    # Other formats for the matrices whose GGUF names end so (e.g. {"attn_v.weight": Q8_0}), as mixed
    # files like Q4_K_M store some projections with more bits.
    qtype_overrides: dict = field(default_factory=dict)
    extra_metadata: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# A mixed file, as Q4_K_M ones store some attn_v and ffn_down in Q6_K: Q8_0 and Q5_1 among Q4_1 parts.
MIXED = TinySpec(
    qtype=gguf.GGMLQuantizationType.Q4_1,
    architecture="qwen2",
    qtype_overrides={
        "attn_v.weight": gguf.GGMLQuantizationType.Q8_0,
        "ffn_down.weight": gguf.GGMLQuantizationType.Q5_1,
    },
)

# Q6_K projections and head as Qwen2.5's Q4_K_M file has them (ffn_down, attn_v; "output.weight" also
# matches attn_output), wide enough (256) for the 6-bit layout's super-blocks.
Q6K_MIXED = TinySpec(
    qtype=gguf.GGMLQuantizationType.Q4_1,
    architecture="qwen2",
    hidden=256,
    ffn=256,
    tie_embeddings=False,
    qtype_overrides={
        "attn_v.weight": gguf.GGMLQuantizationType.Q6_K,
        "ffn_down.weight": gguf.GGMLQuantizationType.Q6_K,
        "output.weight": gguf.GGMLQuantizationType.Q6_K,
    },
)


def _permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter: interleave the two rotary halves of every head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_hf_weights(spec: TinySpec, vocab_size: int) -> dict[str, np.ndarray]:
    """Random weights under Hugging Face names, scaled so greedy decoding has clear winners."""
    rng = np.random.default_rng(spec.seed)

    def rand(*shape: int, scale: float = 0.15) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    w = {"model.embed_tokens.weight": rand(vocab_size, spec.hidden, scale=1.0)}
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1.0 + rand(spec.hidden, scale=0.1)
        w[p + "post_attention_layernorm.weight"] = 1.0 + rand(spec.hidden, scale=0.1)
        w[p + "self_attn.q_proj.weight"] = rand(q, spec.hidden)
        w[p + "self_attn.k_proj.weight"] = rand(kv, spec.hidden)
        w[p + "self_attn.v_proj.weight"] = rand(kv, spec.hidden)
        w[p + "self_attn.o_proj.weight"] = rand(spec.hidden, q)
        if spec.architecture == "qwen2":
            w[p + "self_attn.q_proj.bias"] = rand(q, scale=0.5)
            w[p + "self_attn.k_proj.bias"] = rand(kv, scale=0.5)
            w[p + "self_attn.v_proj.bias"] = rand(kv, scale=0.5)
        w[p + "mlp.gate_proj.weight"] = rand(spec.ffn, spec.hidden)
        w[p + "mlp.up_proj.weight"] = rand(spec.ffn, spec.hidden)
        w[p + "mlp.down_proj.weight"] = rand(spec.hidden, spec.ffn)
    w["model.norm.weight"] = 1.0 + rand(spec.hidden, scale=0.1)
    if not spec.tie_embeddings:
        w["lm_head.weight"] = rand(vocab_size, spec.hidden, scale=0.5)
    return w


_GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{_GGUF_NAMES[rest]}"


def write_tiny_gguf(path: Path, spec: TinySpec | None = None) -> tuple[Path, dict[str, np.ndarray]]:
    """Write a tiny random model as GGUF; return its path and the (unpermuted) HF-named weights."""
    spec = spec or TinySpec()
    arch = spec.architecture
    writer = gguf.GGUFWriter(str(path), arch)
    vocab_size = add_tiny_tokenizer(writer)
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(spec.layers)
    writer.add_context_length(spec.context)
    writer.add_embedding_length(spec.hidden)
    writer.add_feed_forward_length(spec.ffn)
    writer.add_head_count(spec.heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_vocab_size(vocab_size)
    for key, value in spec.extra_metadata.items():
        writer.add_string(key, value) if isinstance(value, str) else writer.add_uint32(key, value)
    weights = tiny_hf_weights(spec, vocab_size)
    for hf_name, value in weights.items():
        name = _gguf_name(hf_name)
        if arch == "llama" and name.endswith("attn_q.weight"):
            value = _permute_for_gguf(value, spec.heads)
        elif arch == "llama" and name.endswith("attn_k.weight"):
            value = _permute_for_gguf(value, spec.kv_heads)
        qtype = spec.qtype if value.ndim == 2 else gguf.GGMLQuantizationType.F32
        qtype = next((q for end, q in spec.qtype_overrides.items() if name.endswith(end)), qtype)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, value)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, value.astype(np.float16))
        else:
            # gguf-py cannot quantize to Q6_K: written by hand (q6k_blocks.py)
            q6_k = qtype == gguf.GGMLQuantizationType.Q6_K
            packed = quantize_q6_k(value) if q6_k else gguf.quants.quantize(value, qtype)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, weights


def write_tiny_hf_folder(
    folder: Path, spec: TinySpec, weights: dict[str, np.ndarray], tokenizer_json: str
) -> Path:
    """The same weights as a Hugging Face folder: config.json, model.safetensors, tokenizer.json."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = weights["model.embed_tokens.weight"].shape[0]
    config = {
        "architectures": ["Qwen2ForCausalLM" if spec.architecture == "qwen2" else "LlamaForCausalLM"],
        "model_type": spec.architecture,
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.ffn,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "rms_norm_eps": 1e-5,
        "rope_theta": spec.rope_theta,
        "max_position_embeddings": spec.context,
        "tie_word_embeddings": spec.tie_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": None,
        "eos_token_id": 2,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text(tokenizer_json)
    return folder
