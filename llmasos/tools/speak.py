"""The `speak` tool: text to a WAV file with espeak-ng, run as a subprocess with a timeout.

espeak-ng is a system program (Debian package `espeak-ng`; `make setup` installs it). The text goes
in on stdin, never on the command line, so no text can be read as an option. The default voice,
American English with the `f5` variant at 180 words per minute, is the one PocketSphinx (the
`transcribe` tool) understood best of those tried on 15 sentences: 19% of words wrong, against 25%
for `f2`, 66% for `klatt4` and 82% for espeak-ng's default `en-us`; 140-200 wpm gave 19-34%.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
import wave
from typing import ClassVar

from llmasos.errors import InvalidRequestError, LLMasOSError, ToolUnavailableError
from llmasos.storage.files import make_private, private_dir
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


def synthesize(
    text: str, path: os.PathLike, voice: str = DEFAULT_VOICE, speed: int = DEFAULT_SPEED_WPM
) -> dict:
    """Speak `text` into a 16-bit mono WAV file at `path`; its sample rate, frames and duration."""
    if not text.strip():
        raise InvalidRequestError("text is empty; give the words to speak")
    if not _VOICE.match(voice):
        raise InvalidRequestError(f"voice {voice!r} is not a voice name; use e.g. 'en-us', 'en-us+f5', 'fr'")
    target = os.fspath(path)
    partial = f"{target}.{uuid.uuid4().hex[:8]}.partial"
    command = [espeak_path(), "-v", voice, "-s", str(speed), "-w", partial]
    timeout = 30 + len(text) / 20  # espeak-ng speaks far faster than real time; this only stops a hang
    try:
        done = subprocess.run(command, input=text.encode(), capture_output=True, timeout=timeout)
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
            if "voice does not exist" in message:
                raise InvalidRequestError(
                    f"espeak-ng has no voice {voice!r}; list them with `espeak-ng --voices`"
                )
            raise LLMasOSError(f"espeak-ng failed: {message}")
        with wave.open(partial) as wav:
            rate, frames = wav.getframerate(), wav.getnframes()
        os.replace(partial, target)
    except subprocess.TimeoutExpired:
        raise LLMasOSError(f"espeak-ng did not finish within {timeout:.0f} s") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return {"sample_rate": rate, "num_frames": frames, "duration_s": round(frames / rate, 3)}


class SpeakTool(Tool):
    name = "speak"
    description = "Say text aloud: synthesize speech with espeak-ng and write it to a WAV file."
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
                "description": "where to write the WAV; default: a new file under the app's folder",
            },
            "return_base64": {"type": "boolean", "default": False, "description": "also return the bytes"},
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "sample_rate": {"type": "integer"},
            "num_frames": {"type": "integer"},
            "duration_s": {"type": "number"},
            "voice": {"type": "string"},
            "audio_base64": {"type": "string"},
        },
        "required": ["path", "sample_rate", "num_frames", "duration_s", "voice"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        if args.get("output_path"):
            path = context.check_path(args["output_path"], purpose="write")
        else:
            private_dir(context.output_dir)
            path = context.output_dir / f"speak-{uuid.uuid4().hex[:12]}.wav"
        if not path.parent.is_dir():
            raise InvalidRequestError(
                f"no folder {str(path.parent)!r} to write the WAV into; create it first"
            )
        output = {"path": str(path), **synthesize(args["text"], path, args["voice"], args["speed"])}
        if path.is_relative_to(context.home):
            make_private(path)  # espeak-ng wrote it with the umask's mode
        output["voice"] = args["voice"]
        if args["return_base64"]:
            output["audio_base64"] = base64.b64encode(path.read_bytes()).decode()
        return ToolResult(self.name, output)
