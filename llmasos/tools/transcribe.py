"""The `transcribe` tool: English speech in a WAV file to text, with PocketSphinx's en-US model.

The acoustic model, dictionary and language model ship inside the `pocketsphinx` wheel, so nothing
is downloaded. Audio of any PCM WAV format is mixed to mono and resampled to the model's 16 kHz.
A decoder is not reentrant (it holds the utterance it decodes) and holds the GIL while it decodes,
so decoders live in a small pool of worker processes, one each: concurrent calls decode at once
and the server's own threads run meanwhile. The audio's length is bounded so that no call holds a
decoder for minutes.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any, ClassVar

import numpy as np

from llmasos.errors import InvalidRequestError, ToolUnavailableError
from llmasos.tools.devices import run_tool
from llmasos.tools.instances import ProcessInstancePool
from llmasos.tools.media import Audio, decode_wav, read_input, resample, to_pcm16
from llmasos.tools.registry import Tool, ToolContext, ToolResult

SAMPLE_RATE = 16_000  # the en-US acoustic model's rate
FRAMES_PER_SECOND = 100  # PocketSphinx's default frame rate, for word times
# Noise is the slowest input: a 590 s noisy WAV took 263 s to decode (0.45 s per second of audio),
# and 20 s of white noise took 38 s on a busy 2-core machine. Two minutes holds a spoken question
# or a voice memo and bounds one call to about a minute of decoding on an idle machine.
MAX_DURATION_S = 120.0
# Each worker process holds a decoder on the en-US model: 129 MB resident, 1.6 s to start, measured.
# Two let a short question be answered while a long recording is decoded.
DECODERS = 2
SILENCE_DBFS = -60.0  # audio whose loudest sample is quieter than this holds no speech to transcribe
# Silence added before and after the audio: the decoder finds word boundaries and the cepstral mean
# better with some around the speech. Clips cut tight around speech (as espeak-ng writes them) went
# from 33% to 19-25% word errors with it on 15 espeak-ng sentences; padding 0.25-1 s all helped.
PAD_S = 0.25
_FILLERS = re.compile(r"^(<s>|</s>|<sil>|\[.*\])$")


_MISSING = "transcribe needs the pocketsphinx package; install it with `pip install pocketsphinx`"


def load_decoder() -> Any:
    """A PocketSphinx decoder on the bundled en-US model."""
    try:
        from pocketsphinx import Decoder
    except ImportError as err:
        raise ToolUnavailableError(f"{_MISSING} ({err})") from None
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


decoders = ProcessInstancePool(load_decoder, size=DECODERS, what="speech decoder")


def transcribe_wav(data: bytes) -> dict:
    """Text and word timings of the speech in WAV bytes."""
    audio = decode_wav(data, max_duration_s=MAX_DURATION_S)  # the length is checked from the header
    if audio.peak_dbfs < SILENCE_DBFS:
        raise InvalidRequestError(
            f"the audio is silent (peak {audio.peak_dbfs:.0f} dBFS); record speech and try again"
        )
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), np.float32)
    samples = np.concatenate([pad, resample(audio, SAMPLE_RATE).samples, pad])
    hypothesis, segments = decode_pcm(to_pcm16(Audio(samples, SAMPLE_RATE)))
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
        "text": hypothesis,
        "words": words,
        "duration_s": round(audio.duration_s, 3),
        "sample_rate": audio.sample_rate,
    }


def decode_pcm(pcm: bytes) -> tuple[str, list[tuple[str, int, int]]]:
    """The hypothesis and its (word, start frame, end frame) segments for 16 kHz 16-bit mono PCM."""
    if importlib.util.find_spec("pocketsphinx") is None:  # said here, not by a worker process
        raise ToolUnavailableError(_MISSING)
    return decoders.run(decode_utterance, pcm)


def decode_utterance(decoder: Any, pcm: bytes) -> tuple[str, list[tuple[str, int, int]]]:
    """`decode_pcm`'s work, in the worker process that holds `decoder`."""
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)  # whole-utterance mode: cepstral mean from all of it
    decoder.end_utt()
    hypothesis = decoder.hyp()
    segments = [(s.word, s.start_frame, s.end_frame) for s in decoder.seg()]
    return (hypothesis.hypstr if hypothesis is not None else ""), segments


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
            "audio_base64": {
                "type": "string",
                "minLength": 1,
                "description": "WAV file bytes, base64 or a data: URL",
            },
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
        return ToolResult(self.name, run_tool(self.name, data, transcribe_wav))
