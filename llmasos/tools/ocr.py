"""The `ocr` tool: text and its boxes from an image, with the PP-OCRv4 models RapidOCR ships.

The detection, direction and recognition ONNX models lie inside the `rapidocr-onnxruntime` wheel
and run on onnxruntime; nothing is downloaded. The engine loads once per process on first use and
runs under a lock (one image at a time; onnxruntime itself uses every core for it).
"""

from __future__ import annotations

import io
import threading
import warnings
from typing import Any, ClassVar

from llmasos.errors import InvalidRequestError, ToolUnavailableError
from llmasos.tools.media import read_input
from llmasos.tools.registry import Tool, ToolContext, ToolResult

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (a decompression bomb guard)

_engine: Any = None
_load_lock = threading.Lock()
_run_lock = threading.Lock()


def load_engine() -> Any:
    """The process's RapidOCR engine (PP-OCRv4 detection + recognition), loaded once."""
    global _engine
    with _load_lock:
        if _engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as err:
                raise ToolUnavailableError(
                    f"ocr needs the rapidocr-onnxruntime package ({err}); "
                    "install it with `pip install rapidocr-onnxruntime`"
                ) from None
            _engine = RapidOCR()
        return _engine


def decode_image(data: bytes) -> Any:
    """An RGB PIL image from file bytes, or InvalidRequestError if they are not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise InvalidRequestError(
                    f"the image is {image.width}x{image.height} pixels; the limit is {MAX_PIXELS} pixels"
                )
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequestError(
            "the data is not an image PIL can read; send PNG, JPEG, WebP, BMP, GIF or TIFF"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt image data
        raise InvalidRequestError(f"the image is damaged and cannot be decoded ({err})") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, "white")  # text on a transparent background
        background.paste(image, mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def recognize(data: bytes) -> dict:
    """Lines of text (reading order as detected), each with its box and confidence."""
    image = decode_image(data)
    engine = load_engine()
    with _run_lock:
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
            "image_base64": {"type": "string", "minLength": 1, "description": "image file bytes, base64"},
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
        return ToolResult(self.name, recognize(data))
