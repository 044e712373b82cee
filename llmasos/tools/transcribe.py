"""The `transcribe` tool: English speech in a WAV file to text, with PocketSphinx's en-US model.

The acoustic model, dictionary and language model ship inside the `pocketsphinx` wheel, so nothing
is downloaded. Audio of any PCM WAV format is mixed to mono and resampled to the model's 16 kHz.
One decoder is loaded per process, on first use; decoding holds a lock (a decoder is not reentrant).
"""

from __future__ import annotations

import re
import threading
from typing import Any, ClassVar

import numpy as np

from llmasos.errors import InvalidRequestError, ToolUnavailableError
from llmasos.tools.media import Audio, decode_wav, read_input, resample, to_pcm16
from llmasos.tools.registry import Tool, ToolContext, ToolResult

SAMPLE_RATE = 16_000  # the en-US acoustic model's rate
FRAMES_PER_SECOND = 100  # PocketSphinx's default frame rate, for word times
MAX_DURATION_S = 600.0
SILENCE_DBFS = -60.0  # audio whose loudest sample is quieter than this holds no speech to transcribe
# Silence added before and after the audio: the decoder finds word boundaries and the cepstral mean
# better with some around the speech. Clips cut tight around speech (as espeak-ng writes them) went
# from 33% to 19-25% word errors with it on 15 espeak-ng sentences; padding 0.25-1 s all helped.
PAD_S = 0.25
_FILLERS = re.compile(r"^(<s>|</s>|<sil>|\[.*\])$")

_decoder: Any = None
_load_lock = threading.Lock()
_decode_lock = threading.Lock()


def load_decoder() -> Any:
    """The process's PocketSphinx decoder on the bundled en-US model (loaded once)."""
    global _decoder
    with _load_lock:
        if _decoder is None:
            try:
                from pocketsphinx import Decoder
            except ImportError as err:
                raise ToolUnavailableError(
                    f"transcribe needs the pocketsphinx package ({err}); "
                    "install it with `pip install pocketsphinx`"
                ) from None
            _decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        return _decoder


def transcribe_wav(data: bytes) -> dict:
    """Text and word timings of the speech in WAV bytes."""
    audio = decode_wav(data)
    if audio.duration_s > MAX_DURATION_S:
        raise InvalidRequestError(
            f"the audio is {audio.duration_s:.0f} s long; transcribe takes at most {MAX_DURATION_S:.0f} s, "
            "so split it"
        )
    if audio.peak_dbfs < SILENCE_DBFS:
        raise InvalidRequestError(
            f"the audio is silent (peak {audio.peak_dbfs:.0f} dBFS); record speech and try again"
        )
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), np.float32)
    samples = np.concatenate([pad, resample(audio, SAMPLE_RATE).samples, pad])
    pcm = to_pcm16(Audio(samples, SAMPLE_RATE))
    decoder = load_decoder()
    with _decode_lock:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)  # whole-utterance mode: cepstral mean from all of it
        decoder.end_utt()
        hypothesis = decoder.hyp()
        segments = [(s.word, s.start_frame, s.end_frame) for s in decoder.seg()]
    words = [
        {
            "word": re.sub(r"\(\d+\)$", "", word),  # "the(2)" is the second pronunciation of "the"
            "start_s": round(max(0.0, start / FRAMES_PER_SECOND - PAD_S), 2),
            "end_s": round(min(audio.duration_s, (end + 1) / FRAMES_PER_SECOND - PAD_S), 2),
        }
        for word, start, end in segments
        if not _FILLERS.match(word)
    ]
    return {
        "text": hypothesis.hypstr if hypothesis is not None else "",
        "words": words,
        "duration_s": round(audio.duration_s, 3),
        "sample_rate": audio.sample_rate,
    }


class TranscribeTool(Tool):
    name = "transcribe"
    description = (
        "Transcribe English speech from a WAV audio file (path or base64) into text, with word timings."
    )
    touches_files = True
    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "path of a WAV file"},
            "audio_base64": {"type": "string", "minLength": 1, "description": "WAV file bytes, base64"},
        },
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "words": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "word": {"type": "string"},
                        "start_s": {"type": "number"},
                        "end_s": {"type": "number"},
                    },
                    "required": ["word", "start_s", "end_s"],
                },
            },
            "duration_s": {"type": "number"},
            "sample_rate": {"type": "integer"},
        },
        "required": ["text", "words", "duration_s", "sample_rate"],
    }

    def run(self, args: dict, context: ToolContext) -> ToolResult:
        data = read_input(args, context, path_key="path", data_key="audio_base64", what="audio")
        return ToolResult(self.name, transcribe_wav(data))
