"""The `ocr` tool: text and its boxes from an image, with the PP-OCRv4 models RapidOCR ships.

The detection, direction and recognition ONNX models lie inside the `rapidocr-onnxruntime` wheel
and run on onnxruntime; nothing is downloaded. Engines load on first use, one per concurrent call
up to a small pool, so a large image does not hold up every other caller.
"""

from __future__ import annotations

from typing import Any, ClassVar

from llmasos.errors import ToolUnavailableError
from llmasos.tools.devices import run_tool
from llmasos.tools.instances import InstancePool
from llmasos.tools.media import decode_image, read_input
from llmasos.tools.registry import Tool, ToolContext, ToolResult

# Each engine runs onnxruntime on every core, so two calls at once share the cores rather than
# add speed; the pool exists so that one call never waits for another's whole image.
ENGINES = 2


def load_engine() -> Any:
    """A RapidOCR engine (PP-OCRv4 detection + recognition)."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as err:
        raise ToolUnavailableError(
            f"ocr needs the rapidocr-onnxruntime package ({err}); "
            "install it with `pip install rapidocr-onnxruntime`"
        ) from None
    return RapidOCR()


_engines: InstancePool[Any] = InstancePool(load_engine, size=ENGINES)


def recognize(data: bytes) -> dict:
    """Lines of text (reading order as detected), each with its box and confidence."""
    image = decode_image(data)
    with _engines.use() as engine:
        found, _ = engine(image)
    lines = [
        {
            "text": text,
            "confidence": round(float(score), 4),
            "box": [[round(float(x), 1), round(float(y), 1)] for x, y in box],
        }
        for box, text, score in found or []
    ]
    return {
        "text": "\n".join(line["text"] for line in lines),
        "lines": lines,
        "width": image.width,
        "height": image.height,
    }


class OcrTool(Tool):
    name = "ocr"
    description = (
        "Read the text in an image (a photo, scan, screenshot or receipt) given as a file path or base64 "
        "bytes; returns the text and each line's box."
    )
    touches_files = True
    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "path of an image file"},
            "image_base64": {
                "type": "string",
                "minLength": 1,
                "description": "image file bytes, base64 or a data: URL",
            },
        },
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string"},
                        "confidence": {"type": "number"},
                        "box": {  # four corners, clockwise from top left, in pixels
                            "type": "array",
                            "items": {
                                "type": "array",
                                "items": {"type": "number"},
                                "minItems": 2,
                                "maxItems": 2,
                            },
                        },
                    },
                    "required": ["text", "confidence", "box"],
                },
            },
            "width": {"type": "integer"},
            "height": {"type": "integer"},
        },
        "required": ["text", "lines", "width", "height"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        data = read_input(args, context, path_key="path", data_key="image_base64", what="image")
        return ToolResult(self.name, run_tool(self.name, data, recognize))
