"""The built-in tools, registered through the plugin door like any other (entry point `tools` of the
`llmasos` distribution). Importing this loads no model: each tool loads its own on first use."""

from __future__ import annotations

from llmasos.programs import ProgramRegistry
from llmasos.tools.base import Tool
from llmasos.tools.calculator import CalculatorTool
from llmasos.tools.clock import ClockTool
from llmasos.tools.embed import EmbedTool
from llmasos.tools.knowledge import KnowledgeTool
from llmasos.tools.kv import KvTool
from llmasos.tools.ocr import OcrTool
from llmasos.tools.speak import SpeakTool
from llmasos.tools.transcribe import TranscribeTool

#: Requests in users' words for the tools that read or make media. The router sends an attached
#: file to ocr or transcribe by its kind; these are for requests that name the job. Written from what
#: each tool does, before the router's held-aside test set was run (see llmasos/router/catalog.py).
MEDIA_EXAMPLES = {
    "speak": (
        "Say this aloud",
        "Read this text to me with your voice",
        "Turn this sentence into speech",
        "Pronounce this word for me",
    ),
    "ocr": (
        "What is written in this image?",
        "Read this scanned page",
        "Get the text from this screenshot",
        "What does this sign say?",
    ),
    "transcribe": (
        "What does this audio say?",
        "Turn this recording into text",
        "Write down what is spoken in this clip",
        "Transcribe this podcast episode",
    ),
}


def builtin_tools() -> list[Tool]:
    """A fresh instance of every built-in tool."""
    return [
        CalculatorTool(),
        ClockTool(),
        EmbedTool(),
        KnowledgeTool(),
        KvTool(),
        OcrTool(),
        SpeakTool(),
        TranscribeTool(),
    ]


def register(registry: ProgramRegistry) -> None:
    """The plugin hook: add every built-in tool."""
    for tool in builtin_tools():
        registry.register(tool, examples=MEDIA_EXAMPLES.get(tool.name))
