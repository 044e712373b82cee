"""A request as the engine holds it: its sequence and its streaming detokenizer, and how each sampled
token becomes the request's output (text, stop checks, finish reason)."""

from __future__ import annotations

from collections.abc import Collection

from llmasos.engine.detokenizer import IncrementalDetokenizer
from llmasos.engine.protocol import RequestOutput
from llmasos.engine.sampling_params import TokenLogprobs
from llmasos.engine.sequence import FinishReason, Sequence, SequenceStatus


class Request:
    """The engine's bookkeeping for one request."""

    def __init__(self, seq: Sequence, detokenizer: IncrementalDetokenizer) -> None:
        self.seq = seq
        self.detokenizer = detokenizer

    def replay(self, output_ids: list[int], vocab_size: int) -> None:
        """Take `output_ids` as already generated (elsewhere, their text already sent): appended to
        be computed, fed to the detokenizer, and their draws skipped by a seeded generator."""
        for token_id in output_ids:
            self.seq.append_token(token_id)
            self.detokenizer.add(token_id)
        self.seq.sampling.skip_draws(len(output_ids), vocab_size)

    def accept(
        self, token_id: int, eos_token_ids: Collection[int], logprobs: TokenLogprobs | None = None
    ) -> RequestOutput:
        """Append a sampled token; the request finishes on a stop token, a stop string or its length.
        The caller removes a finished request from its queues."""
        seq, detok, params = self.seq, self.detokenizer, self.seq.params
        seq.append_token(token_id)
        # ignore_eos skips the model's end-of-turn tokens only; stop ids the caller named still stop,
        # as stop strings do (vLLM's semantics).
        is_eos = not params.ignore_eos and token_id in eos_token_ids
        is_stop_token = is_eos or token_id in params.stop_token_ids
        text = "" if is_stop_token else detok.add(token_id)
        if is_stop_token or detok.stopped:
            seq.finish_reason = FinishReason.STOP
        elif seq.num_output_tokens >= seq.max_tokens:
            seq.finish_reason = FinishReason.LENGTH
        if seq.finish_reason is not None:
            if not detok.stopped:
                text += detok.flush()
            seq.status = SequenceStatus.FINISHED
        return self.output([token_id], text, logprobs=(logprobs,) if logprobs is not None else ())

    def output(
        self,
        token_ids: list[int],
        text: str,
        error: str | None = None,
        logprobs: tuple[TokenLogprobs, ...] = (),
    ) -> RequestOutput:
        seq = self.seq
        return RequestOutput(
            request_id=seq.seq_id,
            token_ids=token_ids,
            text=text,
            finished=seq.is_finished or error is not None,
            finish_reason="error" if error is not None else (seq.finish_reason and seq.finish_reason.value),
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=seq.num_output_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            error=error,
            logprobs=logprobs,
        )
