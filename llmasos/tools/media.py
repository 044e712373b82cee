"""Reading the media a tool is given: a file path, inline base64 bytes or a `data:` URL, checked
from its header before anything is decoded, with errors that name the limit that was passed.

Audio is PCM WAV (what `wave` reads), returned as mono float samples in [-1, 1]; `resample` brings
it to the rate a model wants with a polyphase filter (no aliasing from naive interpolation).
Images are the six common formats, opened lazily by PIL so their size is known before decoding.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import wave
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from llmasos.errors import InvalidRequestError
from llmasos.tools.registry import ToolContext

MAX_INPUT_BYTES = 32 * 1024 * 1024  # per image or audio file, inline or on disk
# 8 kHz is telephone audio, the lowest rate speech is still recorded at; 192 kHz the highest that
# studio equipment writes. Outside them a header is wrong or hostile (1e9 Hz made resampling fail).
SAMPLE_RATES = (8_000, 192_000)
MAX_CHANNELS = 8  # 7.1 surround; more is not a recording of someone speaking
SAMPLE_WIDTHS = (1, 2, 3, 4)  # bytes: 8-, 16-, 24- and 32-bit integer PCM
# Writers that cannot seek back (`espeak-ng --stdout`, ffmpeg to a pipe) leave a placeholder this
# large or larger as the data chunk's size; the samples present are then the recording.
STREAMED_SIZE = 0x7FFF_0000
# Decoded, an RGB image takes 3 bytes a pixel (120 MB here); 40 M pixels is a 7,300 x 5,500 photo.
MAX_IMAGE_PIXELS = 40_000_000
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # PIL would open dozens more, EPS too
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]+)*),", re.ASCII)
_CONVERT_AUDIO = "convert it, e.g. `ffmpeg -i IN -ac 1 -ar 16000 -sample_fmt s16 OUT.wav`"


def read_input(args: dict, context: ToolContext, *, path_key: str, data_key: str, what: str) -> bytes:
    """The bytes of exactly one of `args[path_key]` (a file) or `args[data_key]` (base64 or a data URL)."""
    given = [k for k in (path_key, data_key) if args.get(k) is not None]
    if len(given) != 1:
        raise InvalidRequestError(
            f"give the {what} as exactly one of {path_key!r} (a file path) or {data_key!r} (base64 bytes)"
        )
    if given[0] == data_key:
        return decode_base64(args[data_key], data_key)
    path = context.check_path(args[path_key], purpose="read")
    if not path.is_file():
        raise InvalidRequestError(f"no {what} file at {str(path)!r}; check the path")
    size = path.stat().st_size
    _check_size(size, f"the {what} file {str(path)!r}")
    return path.read_bytes()


def decode_base64(text: str, field: str) -> bytes:
    """The bytes of base64 `text`, or of a `data:[MIME];base64,...` URL; bounded before decoding."""
    url = _DATA_URL.match(text)
    if url is not None:
        if not url.group("params").endswith(";base64"):
            raise InvalidRequestError(
                f"{field!r} is a data URL without ';base64'; send data:MIME;base64,<base64 bytes>"
            )
        text = text[url.end() :]
    _check_size(len(text) * 3 // 4, f"{field!r}", about=True)  # 4 base64 characters hold 3 bytes
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{field!r} is not valid base64") from None
    if not data:
        raise InvalidRequestError(f"{field!r} is empty; send the file's bytes")
    return data


def _check_size(size: int, what: str, *, about: bool = False) -> None:
    if size > MAX_INPUT_BYTES:
        raise InvalidRequestError(
            f"{what} is {'about ' if about else ''}{size:,} bytes; the limit is {MAX_INPUT_BYTES:,} bytes"
        )
    if size == 0:
        raise InvalidRequestError(f"{what} is empty (0 bytes); send a file with content")


def sniff_kind(data: bytes) -> str:
    """'audio' for a WAV file, 'image' for PNG/JPEG/GIF/BMP/WebP/TIFF, from the magic bytes."""
    if not data:
        raise InvalidRequestError("the file is empty (0 bytes); send a WAV recording or an image")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio"
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:6] in (b"GIF87a", b"GIF89a"):
        return "image"
    if (
        data[:2] == b"BM"
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
        or data[:4] in (b"II*\x00", b"MM\x00*")
    ):
        return "image"
    raise InvalidRequestError(
        "the file is neither a WAV recording nor an image (PNG, JPEG, GIF, BMP, WebP, TIFF)"
    )


# ---- audio -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WavHeader:
    """What a WAV file's header says, checked against the limits and the bytes present."""

    channels: int
    sample_width: int  # bytes per sample
    sample_rate: int
    num_frames: int  # frames the file holds (the header's count, or what a streamed file holds)
    data_offset: int  # where the samples start

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # (num_samples,) float32 in [-1, 1], mono
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def peak_dbfs(self) -> float:
        """Loudest sample relative to full scale; -inf for digital silence."""
        peak = float(np.max(np.abs(self.samples))) if len(self.samples) else 0.0
        return 20 * np.log10(peak) if peak > 0 else float("-inf")


def read_wav_header(data: bytes, *, max_duration_s: float | None = None) -> WavHeader:
    """The header of PCM WAV `data`, refused with the limit it passes; no sample is read."""
    buffer = io.BytesIO(data)
    try:
        with wave.open(buffer) as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            data_offset = buffer.tell()  # `wave` stops right after the data chunk's 8-byte header
    except (wave.Error, EOFError, RuntimeError) as err:  # `wave` raises RuntimeError past a chunk's end
        detail = str(err) or "a chunk runs past the end of the file"
        raise InvalidRequestError(
            f"the audio is not a readable PCM WAV file ({detail}); {_CONVERT_AUDIO}"
        ) from None
    _check_format(channels, width, rate)
    claimed_bytes = int.from_bytes(data[data_offset - 4 : data_offset], "little")
    present_bytes = len(data) - data_offset
    frame_bytes = channels * width
    streamed = claimed_bytes >= STREAMED_SIZE
    header = WavHeader(
        channels, width, rate, (present_bytes if streamed else claimed_bytes) // frame_bytes, data_offset
    )
    if max_duration_s is not None and header.duration_s > max_duration_s:
        raise InvalidRequestError(
            f"the audio is {header.duration_s:.1f} s long; the limit is {max_duration_s:g} s; "
            "split it into shorter recordings"
        )
    if not streamed and claimed_bytes > present_bytes:
        raise InvalidRequestError(
            f"the WAV file is truncated: its header says {claimed_bytes:,} bytes of samples but the file "
            f"holds {present_bytes:,}; export or copy it again"
        )
    if header.num_frames == 0:
        raise InvalidRequestError("the WAV file has no audio samples; record something and try again")
    return header


def _check_format(channels: int, width: int, rate: int) -> None:
    low, high = SAMPLE_RATES
    if not low <= rate <= high:
        raise InvalidRequestError(
            f"the WAV's sample rate is {rate:,} Hz; accepted rates are {low:,} to {high:,} Hz; "
            + _CONVERT_AUDIO
        )
    if channels > MAX_CHANNELS:
        raise InvalidRequestError(
            f"the WAV has {channels} channels; at most {MAX_CHANNELS} are accepted; {_CONVERT_AUDIO}"
        )
    if width not in SAMPLE_WIDTHS:
        raise InvalidRequestError(
            f"the WAV has {8 * width}-bit samples; accepted: 8-, 16-, 24- or 32-bit integer PCM; "
            f"{_CONVERT_AUDIO}"
        )


def decode_wav(data: bytes, *, max_duration_s: float | None = None) -> Audio:
    """A PCM WAV file's samples, channels averaged to mono, once its header has passed the checks."""
    header = read_wav_header(data, max_duration_s=max_duration_s)
    frame_bytes = header.channels * header.sample_width
    start = header.data_offset
    frames = data[start : start + header.num_frames * frame_bytes]
    samples = _pcm_to_float(frames, header.sample_width).reshape(-1, header.channels).mean(axis=1)
    return Audio(samples.astype(np.float32), header.sample_rate)


def _pcm_to_float(frames: bytes, width: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(frames, np.uint8).astype(np.float32) - 128) / 128
    if width == 3:  # 24-bit: widen each little-endian sample to 32 bits
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        wide = np.zeros((len(raw), 4), np.uint8)
        wide[:, 1:] = raw
        return wide.view("<i4").reshape(-1).astype(np.float32) / 2**31
    dtype = {2: "<i2", 4: "<i4"}[width]
    return np.frombuffer(frames, dtype).astype(np.float32) / 2 ** (8 * width - 1)


def resample(audio: Audio, rate: int) -> Audio:
    """The audio at `rate` Hz (polyphase, so frequencies above the new Nyquist are filtered out)."""
    if audio.sample_rate == rate:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(rate, audio.sample_rate).limit_denominator(1000)
    samples = resample_poly(audio.samples, ratio.numerator, ratio.denominator)
    return Audio(np.clip(samples, -1, 1).astype(np.float32), rate)


def to_pcm16(audio: Audio) -> bytes:
    return (np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes()


def encode_wav(audio: Audio) -> bytes:
    """16-bit mono PCM WAV bytes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(audio.sample_rate)
        wav.writeframes(to_pcm16(audio))
    return buffer.getvalue()


# ---- images ----------------------------------------------------------------------------------------


_NOT_AN_IMAGE = "the data is not an image PIL can read; send PNG, JPEG, WebP, BMP, GIF or TIFF"


def open_image(data: bytes) -> Any:
    """A lazily opened PIL image (header read, pixels not decoded) within the size limit."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise InvalidRequestError(_NOT_AN_IMAGE) from None
    except Image.DecompressionBombError as err:  # PIL's own bound, at twice its MAX_IMAGE_PIXELS
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "far over the limit"
        raise InvalidRequestError(
            f"the image is {size}; the limit is {MAX_IMAGE_PIXELS:,} pixels (width x height); scale it down"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # a damaged header
        raise InvalidRequestError(f"the image is damaged and cannot be decoded ({err})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidRequestError(
            f"the image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels "
            "(width x height); scale it down"
        )
    if width * height == 0:
        raise InvalidRequestError(f"the image is {width}x{height} pixels: it has no pixels to read")
    return image


def decode_image(data: bytes) -> Any:
    """An RGB PIL image from file bytes (transparent pixels made white), checked before decoding."""
    from PIL import Image

    image = open_image(data)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or corrupt pixel data
        raise InvalidRequestError(f"the image is damaged and cannot be decoded ({err})") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, "white")  # text on a transparent background
        background.paste(image, mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")
