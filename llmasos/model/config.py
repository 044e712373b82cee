"""The architecture of one model, read from GGUF metadata or a Hugging Face config.json."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llmasos.errors import UnsupportedModelError

#: Architectures the Llama-family implementation runs. Qwen2 differs only by q/k/v biases; Gemma 3 has
#: its own layers (model/gemma3.py) over the same attention, KV cache and weight formats.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma3")

#: RoPE scaling types we implement; anything else is refused by name instead of silently ignored.
SUPPORTED_ROPE_SCALING = ("none", "linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """How rotary position frequencies are stretched for long contexts."""

    type: str = "none"  # one of SUPPORTED_ROPE_SCALING
    factor: float = 1.0
    # llama3 only: the band of wavelengths that is interpolated smoothly.
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context_length: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of a Llama-family transformer. Names follow the checkpoint."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int  # < num_heads means grouped-query attention
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    context_length: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2 has q/k/v biases
    # Gemma 3 only (None/empty elsewhere): which layers attend to a sliding window of the last
    # `sliding_window` positions (the others see the whole context), the RoPE base of those layers,
    # the attention scale's divisor (scores are q.k / sqrt(query_pre_attn_scalar)), and the tanh cap
    # of the final logits.
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] = ()
    rope_local_theta: float | None = None
    query_pre_attn_scalar: float | None = None
    final_logit_softcapping: float | None = None

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"architecture {self.architecture!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if self.rope_scaling.type not in SUPPORTED_ROPE_SCALING:
            raise UnsupportedModelError(
                f"RoPE scaling {self.rope_scaling.type!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_ROPE_SCALING)}"
            )
        if self.num_heads % self.num_kv_heads:
            raise UnsupportedModelError(
                f"{self.num_heads} attention heads do not divide into {self.num_kv_heads} KV heads"
            )

    @property
    def attention_scale(self) -> float:
        """What scores are multiplied by: 1/sqrt(head_dim) unless the model names another divisor."""
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def is_sliding(self, layer: int) -> bool:
        """Whether layer `layer` attends to a sliding window rather than the whole context."""
        return bool(self.sliding_layers) and self.sliding_layers[layer]

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV-cache bytes one token occupies: keys and values of every layer."""
        return 2 * self.num_layers * self.kv_size * dtype_bytes

    @classmethod
    def from_hf_config(cls, cfg: dict) -> ModelConfig:
        """Build from a Hugging Face `config.json` dict (transformers 4.x and 5.x spellings)."""
        model_type = cfg.get("model_type", "")
        num_heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        rope_params = cfg.get("rope_parameters") or {}
        scaling_cfg = cfg.get("rope_scaling") or (
            rope_params if rope_params.get("rope_type", "default") != "default" else None
        )
        return cls(
            architecture=model_type,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or num_heads),
            head_dim=int(cfg.get("head_dim") or hidden // num_heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(cfg.get("rope_theta") or rope_params.get("rope_theta") or 10000.0),
            rope_scaling=_rope_scaling_from_hf(scaling_cfg),
            context_length=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
        )


def _rope_scaling_from_hf(scaling: dict | None) -> RopeScaling:
    if not scaling:
        return RopeScaling()
    kind = scaling.get("rope_type") or scaling.get("type") or "none"
    if kind == "default":
        return RopeScaling()
    return RopeScaling(
        type=kind,
        factor=float(scaling.get("factor", 1.0)),
        low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
        high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
        original_context_length=int(scaling.get("original_max_position_embeddings", 8192)),
    )


#: Gemma 3's local (sliding-window) layers use this RoPE base; GGUF files do not carry it (llama.cpp
#: and transformers both fix it at 10,000).
GEMMA3_LOCAL_ROPE_THETA = 10_000.0
#: Every 6th Gemma 3 layer is global (layers 5, 11, 17, ...), as llama.cpp and transformers set it
#: where the file names no pattern.
GEMMA3_SLIDING_PATTERN = 6


def gemma3_fields(get: Callable[[str, object], object], num_layers: int, hidden: int, num_heads: int) -> dict:
    """ModelConfig's Gemma 3 fields from its GGUF keys (`get("attention.sliding_window", default)`)."""
    pattern = get("attention.sliding_window_pattern", GEMMA3_SLIDING_PATTERN)
    if isinstance(pattern, list):  # per layer, True where the layer is windowed
        sliding = tuple(bool(x) for x in pattern)
    else:
        sliding = tuple((i + 1) % int(pattern) != 0 for i in range(num_layers))
    scalar = get("attention.query_pre_attn_scalar", None)
    if scalar is None and num_layers == 62:
        # The 27B model alone scales by hidden/heads (168) instead of head_dim (128); its GGUF does not
        # say so, and llama.cpp recognises it by its layer count as we do.
        scalar = hidden / num_heads
    cap = get("final_logit_softcapping", None)
    return {
        "sliding_window": int(get("attention.sliding_window", 512)),
        "sliding_layers": sliding,
        "rope_local_theta": float(get("rope.freq_base_swa", GEMMA3_LOCAL_ROPE_THETA)),
        "query_pre_attn_scalar": None if scalar is None else float(scalar),
        "final_logit_softcapping": None if not cap else float(cap),
    }
