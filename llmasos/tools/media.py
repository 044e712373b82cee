"""Reading the media a tool is given: a file path or inline base64 bytes, checked with clear errors.

Audio is PCM WAV (what `wave` reads), returned as mono float samples in [-1, 1]; `resample` brings
it to the rate a model wants with a polyphase filter (no aliasing from naive interpolation).
"""

from __future__ import annotations

import base64
import binascii
import io
import wave
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from llmasos.errors import InvalidRequestError
from llmasos.tools.registry import ToolContext

MAX_INPUT_BYTES = 32 * 1024 * 1024  # per image or audio file, inline or on disk


def read_input(args: dict, context: ToolContext, *, path_key: str, data_key: str, what: str) -> bytes:
    """The bytes of exactly one of `args[path_key]` (a file) or `args[data_key]` (base64)."""
    given = [k for k in (path_key, data_key) if args.get(k) is not None]
    if len(given) != 1:
        raise InvalidRequestError(
            f"give the {what} as exactly one of {path_key!r} (a file path) or {data_key!r} (base64 bytes)"
        )
    if given[0] == data_key:
        try:
            data = base64.b64decode(args[data_key], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"{data_key!r} is not valid base64") from None
        return _bounded(data, len(data), what)
    path = context.check_path(args[path_key], purpose="read")
    if not path.is_file():
        raise InvalidRequestError(f"no {what} file at {str(path)!r}; check the path")
    return _bounded(path, path.stat().st_size, what)


def _bounded(source, size: int, what: str) -> bytes:
    if size > MAX_INPUT_BYTES:
        raise InvalidRequestError(f"the {what} is {size} bytes; the limit is {MAX_INPUT_BYTES} bytes")
    return source if isinstance(source, bytes) else source.read_bytes()


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


def decode_wav(data: bytes) -> Audio:
    """A PCM WAV file's samples, channels averaged to mono."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, ValueError) as err:
        raise InvalidRequestError(
            f"the audio is not a readable PCM WAV file ({err}); convert it, e.g. "
            "`ffmpeg -i IN -ac 1 -ar 16000 -sample_fmt s16 OUT.wav`"
        ) from None
    if width not in (1, 2, 3, 4) or channels < 1 or rate < 1000:
        raise InvalidRequestError(f"unsupported WAV: {channels} channels, {8 * width}-bit, {rate} Hz")
    usable = len(frames) - len(frames) % (width * channels)
    if usable == 0:
        raise InvalidRequestError("the WAV file has no audio samples")
    samples = _pcm_to_float(frames[:usable], width).reshape(-1, channels).mean(axis=1)
    return Audio(samples.astype(np.float32), rate)


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
