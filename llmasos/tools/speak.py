"""The `speak` tool: text to WAV audio with espeak-ng, run as a subprocess with a timeout.

espeak-ng is a system program (Debian package `espeak-ng`; `make setup` installs it). The text goes
in on stdin, never on the command line, so no text can be read as an option. The default voice,
American English with the `f5` variant at 180 words per minute, is the one PocketSphinx (the
`transcribe` tool) understood best of those tried on 15 sentences: 19% of words wrong, against 25%
for `f2`, 66% for `klatt4` and 82% for espeak-ng's default `en-us`; 140-200 wpm gave 19-34%.

The audio goes back to the caller (base64 in the result), or into the file the caller names; the
server keeps nothing. It used to keep every WAV (13.8 MB for the longest text) and answer with its
own path on disk.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import ClassVar

from llmasos.errors import InvalidRequestError, LLMasOSError, ToolUnavailableError
from llmasos.storage.files import write_private
from llmasos.tools.devices import run_tool
from llmasos.tools.media import read_wav_header
from llmasos.tools.registry import Tool, ToolContext, ToolResult

PROGRAM = "espeak-ng"
DEFAULT_VOICE = "en-us+f5"
DEFAULT_SPEED_WPM = 180
MAX_TEXT_CHARS = 5_000
_VOICE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]+)*(\+[A-Za-z0-9_]+)?$")


def espeak_path() -> str:
    """The espeak-ng program, or ToolUnavailableError saying how to install it."""
    path = shutil.which(PROGRAM)
    if path is None:
        raise ToolUnavailableError(
            "speak needs the espeak-ng program, which is not on PATH; install it with "
            "`apt-get install espeak-ng` (or your system's package manager), or run `make setup`"
        )
    return path


def synthesize(text: str, voice: str = DEFAULT_VOICE, speed: int = DEFAULT_SPEED_WPM) -> tuple[bytes, dict]:
    """`text` spoken as 16-bit mono WAV bytes, with their sample rate, frames and duration."""
    if not text.strip():
        raise InvalidRequestError("text is empty; give the words to speak")
    if not _VOICE.match(voice):
        raise InvalidRequestError(f"voice {voice!r} is not a voice name; use e.g. 'en-us', 'en-us+f5', 'fr'")
    timeout = 30 + len(text) / 20  # espeak-ng speaks far faster than real time; this only stops a hang
    # espeak-ng writes a seekable file with true sizes (to stdout it leaves placeholders), so it
    # writes into a folder of its own (mkdtemp makes it 0700), removed as soon as it is read.
    with tempfile.TemporaryDirectory(prefix="llmasos-speak-") as folder:
        target = Path(folder) / "speech.wav"
        command = [espeak_path(), "-v", voice, "-s", str(speed), "-w", str(target)]
        try:
            done = subprocess.run(command, input=text.encode(), capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LLMasOSError(f"espeak-ng did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
            if "voice does not exist" in message:
                raise InvalidRequestError(
                    f"espeak-ng has no voice {voice!r}; list them with `espeak-ng --voices`"
                )
            raise LLMasOSError(f"espeak-ng failed: {message}")
        data = target.read_bytes()
    header = read_wav_header(data)
    info = {
        "sample_rate": header.sample_rate,
        "num_frames": header.num_frames,
        "duration_s": round(header.duration_s, 3),
    }
    return data, info


def speak_request(request: dict) -> tuple[bytes, dict]:
    """`synthesize` of {"text", "voice", "speed"}: what a node with the `speech` capability runs."""
    return synthesize(request["text"], request["voice"], request["speed"])


class SpeakTool(Tool):
    name = "speak"
    description = (
        "Say text aloud: synthesize speech with espeak-ng and return the WAV (base64), "
        "or write it to a file you name."
    )
    touches_files = True
    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TEXT_CHARS,
                "description": "what to say",
            },
            "voice": {
                "type": "string",
                "default": DEFAULT_VOICE,
                "description": "espeak-ng voice, e.g. 'en-us+f5', 'en-gb', 'fr', 'de'",
            },
            "speed": {"type": "integer", "minimum": 80, "maximum": 450, "default": DEFAULT_SPEED_WPM},
            "output_path": {
                "type": "string",
                "minLength": 1,
                "description": "write the WAV to this file instead of returning it (local callers)",
            },
            "return_base64": {
                "type": "boolean",
                "default": False,
                "description": "with output_path: also return the bytes (without it they always are)",
            },
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "audio_base64": {"type": "string"},  # the WAV, unless it went to output_path alone
            "path": {"type": "string"},  # output_path as resolved, when one was given
            "sample_rate": {"type": "integer"},
            "num_frames": {"type": "integer"},
            "duration_s": {"type": "number"},
            "voice": {"type": "string"},
        },
        "required": ["sample_rate", "num_frames", "duration_s", "voice"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        path = None
        if args.get("output_path"):
            path = context.check_path(args["output_path"], purpose="write")
            if not path.parent.is_dir():
                raise InvalidRequestError(
                    f"no folder {str(path.parent)!r} to write the WAV into; create it first"
                )
        request = {"text": args["text"], "voice": args["voice"], "speed": args["speed"]}
        data, info = run_tool(self.name, request, speak_request)
        output = {**info, "voice": args["voice"]}
        if path is not None:
            write_private(path, data)
            output["path"] = str(path)
        if path is None or args["return_base64"]:
            output["audio_base64"] = base64.b64encode(data).decode("ascii")
        return ToolResult(self.name, output)
