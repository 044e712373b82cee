"""OCR (RapidOCR's PP-OCRv4 ONNX models) on images the test renders itself, and bad images."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from llmasos.errors import InvalidRequestError, PermissionDeniedError
from llmasos.security.apps import App
from llmasos.tools.registry import ToolContext, default_registry

pytestmark = pytest.mark.real_model

LINES = ["GROCERY MART", "Milk 2L        3.49", "Bread          2.15", "TOTAL DUE     42.50 EUR"]


def render(lines: list[str], *, mode: str = "RGB", size: int = 40) -> Image.Image:
    font = ImageFont.load_default(size=size)
    image = Image.new(mode, (900, 90 + 70 * len(lines)), "white" if mode != "RGBA" else (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 70 * i), line, fill="black" if mode != "RGBA" else (0, 0, 0, 255), font=font)
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _squash(text: str) -> str:
    return "".join(text.split()).lower()  # PP-OCR may merge or split runs of spaces


@pytest.fixture(scope="module")
def ocr():
    return lambda args: default_registry().call("ocr", args, ToolContext(App("scanner"))).output


def test_reads_a_rendered_receipt_from_a_file(ocr, tmp_path: Path) -> None:
    path = tmp_path / "receipt.png"
    render(LINES).save(path)
    output = ocr({"path": str(path)})
    # Wide gaps split a row into separate boxes ("Milk 2L", "3.49"), read left to right, top to bottom.
    assert _squash(output["text"]) == _squash(" ".join(LINES))
    assert "3.49" in [line["text"] for line in output["lines"]]
    assert (output["width"], output["height"]) == (900, 370)
    first = output["lines"][0]
    xs, ys = [p[0] for p in first["box"]], [p[1] for p in first["box"]]
    assert min(xs) < 60 and min(ys) < 60 and max(ys) < 110  # the first line's box is where it was drawn
    assert all(line["confidence"] > 0.8 for line in output["lines"])


def test_reads_base64_jpeg_and_transparent_png(ocr) -> None:
    buffer = io.BytesIO()
    render(["Invoice 2026-11"]).save(buffer, "JPEG", quality=90)
    output = ocr({"image_base64": base64.b64encode(buffer.getvalue()).decode()})
    assert _squash(output["text"]) == _squash("Invoice 2026-11")
    transparent = _png(render(["Open 9am to 5pm"], mode="RGBA"))  # black text on transparent pixels
    output = ocr({"image_base64": base64.b64encode(transparent).decode()})
    assert _squash(output["text"]) == _squash("Open 9am to 5pm")


def test_a_blank_image_has_no_text(ocr) -> None:
    output = ocr({"image_base64": base64.b64encode(_png(Image.new("RGB", (300, 200), "white"))).decode()})
    assert output["text"] == "" and output["lines"] == []


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"this is not an image at all", "not an image"),
        (_png(Image.new("RGB", (64, 64), "white"))[:60], "damaged|not an image"),
        (b"", "not an image"),
    ],
)
def test_bad_images_are_clear_errors(ocr, data: bytes, why: str) -> None:
    with pytest.raises(InvalidRequestError, match=why):
        ocr({"image_base64": base64.b64encode(data).decode() or "AA=="})


def test_bad_arguments_are_clear_errors(ocr, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="exactly one of 'path'"):
        ocr({})
    with pytest.raises(InvalidRequestError, match="exactly one of 'path'"):
        ocr({"path": "a.png", "image_base64": "AAAA"})
    with pytest.raises(InvalidRequestError, match="not valid base64"):
        ocr({"image_base64": "%%% not base64 %%%"})
    with pytest.raises(InvalidRequestError, match="no image file"):
        ocr({"path": str(tmp_path / "missing.png")})
    (tmp_path / "notes.txt").write_text("plain text")
    with pytest.raises(InvalidRequestError, match="not an image"):
        ocr({"path": str(tmp_path / "notes.txt")})


def test_a_remote_caller_cannot_read_files_outside_its_folders(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    render(["password 1234"]).save(secret)
    context = ToolContext(App("remote"), file_roots=(tmp_path / "uploads",))
    with pytest.raises(PermissionDeniedError, match="outside its folders"):
        default_registry().call("ocr", {"path": str(secret)}, context)


def test_oversized_images_are_refused_before_decoding(ocr, tmp_path: Path, monkeypatch) -> None:
    from llmasos.tools import media

    monkeypatch.setattr(media, "MAX_INPUT_BYTES", 100)
    path = tmp_path / "big.png"
    render(["too big"]).save(path)
    with pytest.raises(InvalidRequestError, match="the limit is 100 bytes"):
        ocr({"path": str(path)})
    with pytest.raises(InvalidRequestError, match="the limit is 100 bytes"):
        ocr({"image_base64": base64.b64encode(path.read_bytes()).decode()})


def test_two_images_are_read_at_once_on_their_own_engines(ocr, monkeypatch) -> None:
    """A small image is read while a larger one is inside its engine: the first call waits, inside
    its engine, until the second has been read on another. One engine under one lock (as before)
    would keep the second call out, and the first one's wait would fail."""
    import threading

    from llmasos.tools import ocr as ocr_module
    from llmasos.tools.instances import InstancePool

    log: list[str] = []
    large_inside, small_read = threading.Event(), threading.Event()

    class Watched:  # a real engine that records when a call is inside it
        def __init__(self) -> None:
            self.engine = ocr_module.load_engine()

        def __call__(self, image):
            who = threading.current_thread().name
            log.append(f"{who} reading")
            if who == "large":
                large_inside.set()
                assert small_read.wait(60), "the small image waited for the large one"
            found = self.engine(image)
            log.append(f"{who} read")
            if who == "small":
                small_read.set()
            return found

    monkeypatch.setattr(ocr_module, "_engines", InstancePool(Watched, size=ocr_module.ENGINES))
    images = {"large": _png(render(LINES)), "small": _png(render(["Invoice 2026-11"]))}
    read: dict[str, str] = {}

    def read_as(name: str) -> None:
        read[name] = ocr({"image_base64": base64.b64encode(images[name]).decode()})["text"]

    first = threading.Thread(target=read_as, args=("large",), name="large")
    first.start()
    large_inside.wait(60)
    second = threading.Thread(target=read_as, args=("small",), name="small")
    second.start()
    first.join(120)
    second.join(120)
    assert log == ["large reading", "small reading", "small read", "large read"]
    assert _squash(read["large"]) == _squash(" ".join(LINES))
    assert _squash(read["small"]) == _squash("Invoice 2026-11")
