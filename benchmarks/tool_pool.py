"""What a long noisy recording does to the other callers of `transcribe`, and to the process.

Measures, in one run, on the same question and the same noise (the slowest input PocketSphinx gets):
- the question's latency alone, then sent just after the noise, with one decoder process (one
  decoder, as under the old global lock) and with the tool's pool of `DECODERS`;
- the longest pause of a Python thread of this process (a 10 ms ticker) while the noise is decoded
  in this process (as the tool used to) and in a worker process (as it does now): PocketSphinx holds
  the GIL while it decodes, so in-process decoding pauses every thread, a server's event loop too.

    python benchmarks/tool_pool.py [--noise-s 10]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from llmasos.tools import transcribe
from llmasos.tools.instances import ProcessInstancePool
from llmasos.tools.media import Audio, to_pcm16


def question_latency(question: bytes, noise: bytes | None, decoders: int) -> float:
    """Seconds to decode `question`, sent right after `noise` (if any), on `decoders` processes."""
    pool = ProcessInstancePool(transcribe.load_decoder, size=decoders, what="speech decoder")
    try:
        warm = [pool.submit(transcribe.decode_utterance, question) for _ in range(decoders)]
        [future.result() for future in warm]  # start the workers: starting is not what is measured
        background = pool.submit(transcribe.decode_utterance, noise) if noise is not None else None
        started = time.perf_counter()
        pool.run(transcribe.decode_utterance, question)
        elapsed = time.perf_counter() - started
        if background is not None:
            background.result()
        return elapsed
    finally:
        pool.shutdown()


def longest_pause(decode) -> tuple[float, float]:
    """(seconds `decode()` took, the longest gap between a ticker thread's 10 ms ticks meanwhile)."""
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.01)

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.1)
    started = time.perf_counter()
    decode()
    took = time.perf_counter() - started
    stop.set()
    ticker.join()
    return took, float(np.max(np.diff(ticks)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--noise-s", type=float, default=10.0, help="length of the noisy recording")
    args = parser.parse_args()
    rate = transcribe.SAMPLE_RATE
    t = np.arange(int(1.5 * rate)) / rate  # a 1.5 s "question": a voiced tone that rises and falls
    question = to_pcm16(
        Audio((0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(3 * t)) * t)).astype(np.float32), rate)
    )
    noise_samples = np.random.default_rng(0).normal(0, 0.2, int(args.noise_s * rate)).clip(-1, 1)
    noise = to_pcm16(Audio(noise_samples.astype(np.float32), rate))

    alone = question_latency(question, None, 1)
    locked = question_latency(question, noise, 1)
    pooled = question_latency(question, noise, transcribe.DECODERS)
    print(f"question alone:                             {alone:7.2f} s")
    print(
        f"after {args.noise_s:.0f} s of noise, 1 decoder:            {locked:7.2f} s ({locked / alone:5.1f}x)"
    )
    pooled_label = f"after {args.noise_s:.0f} s of noise, {transcribe.DECODERS} decoder processes:"
    print(f"{pooled_label} {pooled:7.2f} s ({pooled / alone:5.1f}x)")

    decoder = transcribe.load_decoder()
    took, paused = longest_pause(lambda: transcribe.decode_utterance(decoder, noise))
    print(f"noise decoded in this process:   {took:6.2f} s; longest pause of another thread {paused:6.2f} s")
    pool = ProcessInstancePool(transcribe.load_decoder, size=1, what="speech decoder")
    pool.run(transcribe.decode_utterance, question)  # started before the measurement
    took, paused = longest_pause(lambda: pool.run(transcribe.decode_utterance, noise))
    pool.shutdown()
    print(f"noise decoded in a worker:       {took:6.2f} s; longest pause of another thread {paused:6.2f} s")


if __name__ == "__main__":
    main()
