"""The tools a cluster node runs for each capability it advertises (`llmasos node start --capabilities`).

Each entry names the function (as "module:function") a node's tool actor calls with the payload the
tool sends through `llmasos.tools.devices.run_tool`: an image's bytes for OCR, a WAV's bytes for
transcription, {"text", "voice", "speed"} for speech, a list of texts to embed. Each function is the
one the tool calls itself on one box, so a node returns exactly what this process would.
"""

from __future__ import annotations

NODE_TOOLS: dict[str, dict[str, str]] = {
    "vision": {"ocr": "llmasos.tools.ocr:recognize"},
    "speech": {
        "transcribe": "llmasos.tools.transcribe:transcribe_wav",
        "speak": "llmasos.tools.speak:speak_request",
    },
    "embed": {"embed": "llmasos.tools.embed:embed_output"},
}
