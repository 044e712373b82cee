"""The tools a cluster node runs for each capability it advertises (`llmasos node start --capabilities`).

Each entry names the function (as "module:function") a node's tool actor calls with the payload: an
image's bytes for OCR, a WAV's bytes for transcription, text for speech, a list of texts to embed.
"""

from __future__ import annotations

NODE_TOOLS: dict[str, dict[str, str]] = {
    "vision": {"ocr": "llmasos.tools.ocr:recognize"},
    "speech": {"transcribe": "llmasos.tools.transcribe:transcribe_wav", "speak": "llmasos.tools.nodes:speak"},
    "embed": {"embed": "llmasos.tools.nodes:embed"},
}


def speak(text: str) -> tuple[bytes, dict]:
    from llmasos.tools.speak import synthesize

    return synthesize(text)


def embed(texts: list[str]) -> list[list[float]]:
    from llmasos.tools.embed import load_embedder

    vectors, _ = load_embedder().embed(texts)
    return vectors
