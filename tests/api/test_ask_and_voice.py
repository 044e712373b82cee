"""`ask` and the voice loop end to end, through a real server and through the CLI."""

from __future__ import annotations

import base64
import io
import shutil

import pytest

import llmasos
from llmasos.security.audit import AuditLog
from tests.helpers.cli import run_cli


def test_ask_routes_and_runs_a_tool_through_the_kernel(tiny_server):
    client = llmasos.Client(tiny_server.url, tiny_server.admin_key, model="tiny")
    result = client.ask("What is 17% of 2,340?")
    assert result["route"]["target"] == "calculator"
    assert "397.8" in result["answer"]
    assert result["steps"][0]["output"]["value"] == pytest.approx(397.8)
    (row,) = AuditLog().query(app="admin", outcome="ok")
    assert row["call"] == "tool.calculator"


def test_ask_respects_tool_capabilities(tiny_server):
    key = tiny_server.new_app("no-tools", capabilities=("model:*", "service:*"))
    client = llmasos.Client(tiny_server.url, key, model="tiny")
    with pytest.raises(llmasos.errors.PermissionDeniedError, match="tool"):
        client.ask("What time is it right now?")


def _wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x10\x20" * int(seconds * rate))
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_wav_claiming_a_billion_hz_is_a_400_naming_the_accepted_rates(tiny_server):
    """The reproduction: /os/voice and /os/ask answered 500 (`up and down must be >= 1`)."""
    wav = bytearray(_wav())
    wav[24:28] = (10**9).to_bytes(4, "little")
    with tiny_server.client() as http:
        voiced = http.post("/os/voice", json={"audio_base64": _b64(bytes(wav)), "model": "tiny"})
        asked = http.post(
            "/os/ask", json={"request": "what does it say", "file_base64": _b64(bytes(wav)), "model": "tiny"}
        )
    for response in (voiced, asked):
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert "sample rate is 1,000,000,000 Hz" in message and "8,000 to 192,000 Hz" in message


def test_oversized_long_truncated_and_foreign_files_are_400s_naming_what_is_wrong(tiny_server):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    stub = zlib.compress(b"\x00" * 16)  # never decoded: the size in the header is refused first
    huge_png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stub) + chunk(b"IEND", b"")
    long_wav = bytearray(_wav())
    long_wav[40:44] = (590 * 32000).to_bytes(4, "little")  # the header claims 590 s
    cases = {
        "limit is 40,000,000 pixels": huge_png,  # it was "not an image PIL can read"
        "590.0 s long; the limit is 120 s": bytes(long_wav),
        "truncated": _wav()[:2000],
        "neither a WAV recording nor an image": b"%PDF-1.7 not a recording",
    }
    with tiny_server.client() as http:
        for expected, data in cases.items():
            body = {"request": "what is in this file", "file_base64": _b64(data), "model": "tiny"}
            response = http.post("/os/ask", json=body)
            assert response.status_code == 400, response.text
            assert expected in response.json()["error"]["message"]
        as_url = http.post("/os/voice", json={"audio_base64": "data:audio/wav;base64,", "model": "tiny"})
        assert as_url.status_code == 400 and "'audio_base64' is empty" in as_url.text


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng could not be installed")
def test_spoken_answers_come_back_as_audio_and_leave_no_file_on_the_server(tiny_server, llmasos_home):
    """`speak` kept a WAV per call under $LLMASOS_HOME forever and answered with its server path."""
    body = {"request": "Say 'welcome home' as audio.", "model": "tiny", "use_model_for_close_calls": False}
    with tiny_server.client() as http:
        response = http.post("/os/ask", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["route"]["target"] == "speak"
    (step,) = result["steps"]
    audio = base64.b64decode(step["output"]["audio_base64"])
    assert audio[:4] == b"RIFF" and step["output"]["duration_s"] > 0.3
    assert "path" not in step["output"] and str(llmasos_home) not in response.text
    assert [p for p in llmasos_home.rglob("*.wav")] == []


@pytest.mark.real_model
def test_ask_reads_an_image(tiny_server):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (700, 160), "white")
    ImageDraw.Draw(image).text(
        (30, 50), "TOTAL DUE 42.50", fill="black", font=ImageFont.load_default(size=44)
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    client = llmasos.Client(tiny_server.url, tiny_server.admin_key, model="tiny")
    result = client.ask("What does this receipt say?", file=buffer.getvalue())
    assert result["route"]["target"] == "ocr"
    assert "42.50" in result["answer"] and "TOTAL" in result["answer"].upper()


@pytest.mark.real_model
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng could not be installed")
def test_voice_loop_answers_a_spoken_question(tiny_server, tmp_path, monkeypatch, capsys):
    from llmasos.security.apps import App
    from llmasos.tools.registry import ToolContext, default_registry

    def say(text: str) -> bytes:
        args = {"text": text, "speed": 150}  # measured: heard exactly at 150 wpm
        out = default_registry().call("speak", args, ToolContext(App("t")))
        return base64.b64decode(out.output["audio_base64"])

    def hear(wav: bytes) -> str:
        args = {"audio_base64": base64.b64encode(wav).decode()}
        return default_registry().call("transcribe", args, ToolContext(App("t"))).output["text"]

    question = tmp_path / "question.wav"
    question.write_bytes(say("what time is it"))
    answer_wav = tmp_path / "answer.wav"
    from llmasos.sdk.discovery import remove_server_file, write_server_file

    write_server_file(tiny_server.url)
    try:
        code, out, err = run_cli(
            monkeypatch, capsys, "voice", str(question), "-o", str(answer_wav), "-m", "tiny"
        )
    finally:
        remove_server_file()
    assert code == 0, err
    assert "time" in err.split("route:")[0]  # what it heard
    assert "route: clock" in err
    assert out.startswith("It is")
    heard_back = hear(answer_wav.read_bytes()).lower()
    weekday = out.split(" on ")[1].split(",")[0].lower()
    year = "two thousand"  # espeak reads the date's year as "two thousand twenty six"
    # Any of these words heard back shows the answer was spoken intelligibly; pocketsphinx misses some
    # of them at some times of day ("It is 21:50 on Sunday" came back as "the twenty one fifty for...").
    # ("It is 04:50 on Monday" came back as "it's four fifty ... iq thousand twenty six ...".)
    heard_words = ("it is", "it's", weekday, year, "thousand twenty")
    assert any(words in heard_back for words in heard_words), heard_back


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng could not be installed")
def test_cli_ask_writes_spoken_audio_where_the_user_asks(tiny_server, tmp_path, monkeypatch, capsys):
    from llmasos.sdk.discovery import remove_server_file, write_server_file

    target = tmp_path / "welcome.wav"
    write_server_file(tiny_server.url)
    try:
        code, _, err = run_cli(
            monkeypatch, capsys, "ask", "Say 'welcome home' as audio.", "-o", str(target), "-m", "tiny"
        )
        nothing = tmp_path / "nothing.wav"
        quiet = run_cli(monkeypatch, capsys, "ask", "What is 17% of 2,340?", "-o", str(nothing), "-m", "tiny")
    finally:
        remove_server_file()
    assert code == 0, err
    assert target.read_bytes()[:4] == b"RIFF" and f"wrote {target}" in err
    assert quiet[0] == 1 and "no step returned audio" in quiet[2] and not nothing.exists()


def test_the_server_answers_while_a_recording_is_being_transcribed(tiny_server, monkeypatch):
    """PocketSphinx holds the GIL while it decodes; decoding in the server's process froze every
    thread (8 s of noise paused another thread for 28 s). With the decoders in worker processes,
    /healthz answers while the noise is still being decoded."""
    import threading

    import numpy as np

    from llmasos.tools import transcribe
    from llmasos.tools.media import Audio, encode_wav

    decoding = threading.Event()
    real_run = transcribe.decoders.run

    class Signalling:  # the server's pool, saying when a decode has been handed to a worker
        def run(self, fn, *args):
            decoding.set()
            return real_run(fn, *args)

    monkeypatch.setattr(transcribe, "decoders", Signalling())
    noise = np.random.default_rng(0).normal(0, 0.2, 10 * 16000).clip(-1, 1).astype(np.float32)
    body = {
        "request": "Transcribe this voice memo.",
        "file_base64": _b64(encode_wav(Audio(noise, 16000))),
        "model": "tiny",
        "use_model_for_close_calls": False,
    }
    answered: list[int] = []
    with tiny_server.client() as http:
        asking = threading.Thread(target=lambda: answered.append(http.post("/os/ask", json=body).status_code))
        asking.start()
        assert decoding.wait(60)
        health = tiny_server.client().get("/healthz")
        still_decoding = asking.is_alive()
        asking.join(300)
    assert health.status_code == 200 and still_decoding
    assert answered == [200]
