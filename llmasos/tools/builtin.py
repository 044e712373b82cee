"""The built-in tools, in one list. Importing this loads no model: each tool loads its own on first use."""

from __future__ import annotations

from llmasos.tools.calculator import CalculatorTool
from llmasos.tools.clock import ClockTool
from llmasos.tools.embed import EmbedTool
from llmasos.tools.knowledge import KnowledgeTool
from llmasos.tools.ocr import OcrTool
from llmasos.tools.registry import Tool
from llmasos.tools.speak import SpeakTool
from llmasos.tools.transcribe import TranscribeTool


def builtin_tools() -> list[Tool]:
    """A fresh instance of every built-in tool."""
    return [
        CalculatorTool(),
        ClockTool(),
        EmbedTool(),
        KnowledgeTool(),
        OcrTool(),
        SpeakTool(),
        TranscribeTool(),
    ]
