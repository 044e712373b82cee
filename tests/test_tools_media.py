"""Media a tool is given is checked from its header before it is decoded: WAV rate, channels, sample
width, duration and data size; image format and pixel count; empty, truncated and foreign files;
base64 and `data:` URLs. No model is loaded here."""

from __future__ import annotations

import base64
import io
import struct
import wave
import zlib

import numpy as np
import pytest
from PIL import Image

from llmasos.errors import InvalidRequestError
from llmasos.security.apps import App
from llmasos.tools import media
from llmasos.tools.media import (
    MAX_IMAGE_PIXELS,
    SAMPLE_RATES,
    Audio,
    decode_base64,
    decode_image,
    decode_wav,
    encode_wav,
    read_input,
    read_wav_header,
    sniff_kind,
)
from llmasos.tools.registry import ToolContext

RATE_OFFSET, CHANNELS_OFFSET, BITS_OFFSET = 24, 22, 34  # fields of the canonical 44-byte header


def wav_bytes(seconds: float = 0.5, rate: int = 16000, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(b"\x01" * (int(seconds * rate) * channels * width))
    return buffer.getvalue()


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (its pixel data is a stub: never decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# ---- WAV -------------------------------------------------------------------------------------------


def test_a_sample_rate_of_a_billion_hz_names_the_accepted_range() -> None:
    """The reproduction: this header gave `ValueError: up and down must be >= 1` (a 500)."""
    data = patched(wav_bytes(), RATE_OFFSET, "<I", 10**9)
    low, high = SAMPLE_RATES
    with pytest.raises(InvalidRequestError, match="sample rate is 1,000,000,000 Hz") as caught:
        decode_wav(data)
    assert f"{low:,}" in str(caught.value) and f"{high:,}" in str(caught.value)
    for rate in (0, 1000, low - 1, high + 1):
        with pytest.raises(InvalidRequestError, match="sample rate"):
            decode_wav(patched(wav_bytes(), RATE_OFFSET, "<I", rate))


def test_the_accepted_rates_channels_and_widths_decode() -> None:
    for rate in SAMPLE_RATES:
        assert decode_wav(wav_bytes(0.1, rate=rate)).sample_rate == rate
    for width in (1, 2, 3, 4):
        audio = decode_wav(wav_bytes(0.1, width=width, channels=2))
        assert audio.samples.shape == (1600,) and audio.samples.dtype == np.float32


def test_channel_count_and_sample_width_are_checked() -> None:
    many = patched(wav_bytes(), CHANNELS_OFFSET, "<H", 64)
    with pytest.raises(InvalidRequestError, match="64 channels; at most 8"):
        decode_wav(many)
    wide = patched(wav_bytes(), BITS_OFFSET, "<H", 64)
    with pytest.raises(InvalidRequestError, match="64-bit samples; accepted: 8-, 16-, 24- or 32-bit"):
        decode_wav(wide)


def test_duration_is_checked_from_the_header_before_any_sample_is_read(monkeypatch) -> None:
    def no_reading(*args, **kwargs):
        raise AssertionError("the samples were read before the duration was checked")

    long_wav = wav_bytes(seconds=3.0, rate=8000)
    monkeypatch.setattr(wave.Wave_read, "readframes", no_reading)
    with pytest.raises(InvalidRequestError, match=r"3\.0 s long.*the limit is 2 s"):
        decode_wav(long_wav, max_duration_s=2)
    header = read_wav_header(long_wav, max_duration_s=2.5 * 60)
    assert (header.sample_rate, header.channels, header.sample_width) == (8000, 1, 2)
    assert header.duration_s == pytest.approx(3.0)


def test_a_header_claiming_more_samples_than_the_file_holds_is_truncated() -> None:
    whole = wav_bytes(seconds=1.0)
    with pytest.raises(InvalidRequestError, match="truncated: its header says 32,000 bytes"):
        decode_wav(whole[:1000])
    with pytest.raises(InvalidRequestError, match="truncated"):
        decode_wav(whole[:44])  # a header and no samples
    # A header that claims an hour is refused for its length, before the truncation is noticed.
    hour = patched(whole, 40, "<I", 3600 * 32000)
    with pytest.raises(InvalidRequestError, match=r"3600\.0 s long"):
        decode_wav(hour, max_duration_s=120)


def test_a_streamed_wav_with_a_placeholder_size_uses_the_samples_present() -> None:
    """`espeak-ng --stdout` and `ffmpeg ... -f wav pipe:` cannot seek back, so they write 0x7ffff000
    or 0xffffffff as the data size; the samples that are there are the recording."""
    whole = wav_bytes(seconds=1.0)
    for placeholder in (0x7FFFF000, 0xFFFFFFFF):
        audio = decode_wav(patched(whole, 40, "<I", placeholder), max_duration_s=2)
        assert audio.duration_s == pytest.approx(1.0)
    long_stream = patched(wav_bytes(seconds=3.0), 40, "<I", 0xFFFFFFFF)
    with pytest.raises(InvalidRequestError, match="the limit is 2 s"):
        decode_wav(long_stream, max_duration_s=2)


def test_no_samples_empty_and_foreign_files_are_clear_errors() -> None:
    with pytest.raises(InvalidRequestError, match="no audio samples"):
        decode_wav(wav_bytes(seconds=0))
    with pytest.raises(InvalidRequestError, match="not a readable PCM WAV"):
        decode_wav(b"")
    with pytest.raises(InvalidRequestError, match="not a readable PCM WAV"):
        decode_wav(png_of(Image.new("RGB", (4, 4))))


def test_every_prefix_and_corruption_of_a_header_is_a_clear_error() -> None:
    """No header, however cut or damaged, escapes as anything but InvalidRequestError."""
    whole = wav_bytes(seconds=0.05, channels=2)
    rng = np.random.default_rng(0)
    damaged = [whole[:n] for n in range(len(whole))]
    for _ in range(400):
        out = bytearray(whole)
        for offset in rng.integers(0, 44, size=rng.integers(1, 4)):
            out[offset] = int(rng.integers(0, 256))
        damaged.append(bytes(out))
    for data in damaged:
        try:
            audio = decode_wav(data, max_duration_s=60)
        except InvalidRequestError:
            continue
        assert SAMPLE_RATES[0] <= audio.sample_rate <= SAMPLE_RATES[1] and len(audio.samples) > 0


# ---- images ----------------------------------------------------------------------------------------


def test_a_png_claiming_100000_by_100000_names_the_pixel_limit() -> None:
    """The reproduction: this got "not an image PIL can read"; it is one, and too large."""
    with pytest.raises(InvalidRequestError, match="10,000,000,000 pixels") as caught:
        decode_image(png_claiming(100_000, 100_000))
    assert f"{MAX_IMAGE_PIXELS:,} pixels" in str(caught.value)
    just_over = png_claiming(MAX_IMAGE_PIXELS // 1000 + 1, 1000)  # below PIL's own bomb limit
    with pytest.raises(InvalidRequestError, match=f"limit is {MAX_IMAGE_PIXELS:,} pixels"):
        decode_image(just_over)


def test_images_decode_to_rgb_and_bad_ones_are_clear_errors() -> None:
    image = decode_image(png_of(Image.new("RGBA", (30, 20), (0, 0, 0, 0))))
    assert (image.mode, image.size) == ("RGB", (30, 20))
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparency becomes a white page
    with pytest.raises(InvalidRequestError, match="damaged"):
        decode_image(png_of(Image.new("RGB", (64, 64), "white"))[:60])
    with pytest.raises(InvalidRequestError, match="not an image"):
        decode_image(b"plain text, not an image")
    with pytest.raises(InvalidRequestError, match=r"not an image|no pixels"):
        decode_image(png_claiming(0, 0))


def test_only_the_listed_image_formats_are_opened() -> None:
    """PIL can open EPS (through Ghostscript), PSD, ICNS and dozens more; a tool takes the common six."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PCX")
    with pytest.raises(InvalidRequestError, match="send PNG, JPEG, WebP, BMP, GIF or TIFF"):
        decode_image(buffer.getvalue())


# ---- sniffing, base64, data URLs -------------------------------------------------------------------


def test_sniff_kind_reads_the_magic_bytes() -> None:
    assert sniff_kind(wav_bytes()) == "audio"
    assert sniff_kind(png_of(Image.new("RGB", (2, 2)))) == "image"
    with pytest.raises(InvalidRequestError, match="the file is empty"):
        sniff_kind(b"")
    with pytest.raises(InvalidRequestError, match="neither a WAV recording nor an image"):
        sniff_kind(b"%PDF-1.7")


def test_base64_and_data_urls_decode_and_are_bounded_before_decoding(monkeypatch) -> None:
    wav = wav_bytes(0.1)
    encoded = base64.b64encode(wav).decode()
    assert decode_base64(encoded, "audio_base64") == wav
    assert decode_base64(f"data:audio/wav;base64,{encoded}", "audio_base64") == wav
    with pytest.raises(InvalidRequestError, match="'audio_base64' is a data URL without ';base64'"):
        decode_base64("data:audio/wav,RIFF", "audio_base64")
    with pytest.raises(InvalidRequestError, match="'audio_base64' is not valid base64"):
        decode_base64("%%%", "audio_base64")
    with pytest.raises(InvalidRequestError, match="'audio_base64' is empty"):
        decode_base64("data:audio/wav;base64,", "audio_base64")
    monkeypatch.setattr(media, "MAX_INPUT_BYTES", 100)
    with pytest.raises(InvalidRequestError, match=r"about 3,\d+ bytes; the limit is 100 bytes"):
        decode_base64(encoded, "audio_base64")


def test_read_input_refuses_empty_files_and_reads_data_urls(tmp_path) -> None:
    context = ToolContext(App("media"))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InvalidRequestError, match=r"the audio file .* is empty"):
        read_input({"path": str(empty)}, context, path_key="path", data_key="audio_base64", what="audio")
    wav = encode_wav(Audio(np.zeros(160, np.float32), 16000))
    url = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    args = {"audio_base64": url}
    assert read_input(args, context, path_key="path", data_key="audio_base64", what="audio") == wav
