"""Sampling parameters: how one request picks its tokens and when it stops, validated into the
ranges the engine takes; and what a request may ask to see of each draw (`TokenLogprobs`).

Apart from the sampler (sampling.py) so that the kernel and the HTTP layer, which build and check
these, import no torch: a server then starts answering and resumes its workflow runs while torch
and the model load (issue 25's restart-to-progress).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmasos.errors import InvalidSamplingParamsError

if TYPE_CHECKING:
    import torch

#: fn(output_token_ids, logits_row) -> logits_row (torch tensors; named as strings so that this module,
#: which the kernel and the HTTP layer import, does not import torch).
LogitsProcessor = Callable[[list[int], "torch.Tensor"], "torch.Tensor"]

#: torch's generators take any seed from -2**63 (as two's complement) to 2**64 - 1.
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1
#: Counts of tokens (max_tokens, top_k, token ids) stay within a signed 32-bit integer.
MAX_TOKENS = 2**31 - 1
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 512
MAX_STOP_TOKEN_IDS = 256
#: OpenAI's ranges: penalties from -2 to 2, a logit bias from -100 (bans) to 100 (forces), at most
#: 20 alternatives per token.
MAX_PENALTY = 2.0
MAX_LOGIT_BIAS = 100.0
MAX_LOGIT_BIAS_TOKENS = 1024
MAX_TOP_LOGPROBS = 20
#: Below this temperature logits / temperature overflows float32; such requests sample greedily.
GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens and when it stops. Validated on construction."""

    max_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy
    top_k: int = 0  # 0 disables top-k
    top_p: float = 1.0  # 1 disables nucleus sampling
    repetition_penalty: float = 1.0  # 1 disables; >1 discourages tokens already in the context
    # OpenAI's: subtract presence_penalty once from every token already generated, and
    # frequency_penalty once per time it was generated (the output only, as OpenAI and vLLM do).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # (token id, bias) pairs added to the logits before sampling; a {id: bias} mapping (keys may be
    # decimal strings, as JSON spells them) is normalized to sorted pairs.
    logit_bias: tuple[tuple[int, float], ...] = ()
    # None: no logprobs; k >= 0: each sampled token's logprob and its k likeliest alternatives.
    logprobs: int | None = None
    seed: int | None = None  # same seed, same prompt, same output
    stop: tuple[str, ...] = ()  # stop strings; the output ends before the first one
    stop_token_ids: tuple[int, ...] = ()  # in addition to the model's end-of-turn tokens
    ignore_eos: bool = False  # benchmarks generate exactly max_tokens
    skip_special_tokens: bool = True
    # Called per step as fn(output_token_ids, logits_row) -> logits_row, before penalties and
    # sampling: the hook for constrained decoding (JSON schemas, label sets) and custom biases.
    logits_processors: tuple[LogitsProcessor, ...] = ()

    def __post_init__(self) -> None:
        # Every bound is one the engine can take: a value past it once passed this check and then
        # failed in torch on every kernel tick (a seed of 2**70, issue 20).
        _check_int("max_tokens", self.max_tokens, 1, MAX_TOKENS, "a positive integer")
        _check_real("temperature", self.temperature, 0, 100, "a number from 0 (greedy) to 100")
        _check_int("top_k", self.top_k, 0, MAX_TOKENS, "an integer >= 0 (0 disables it)")
        if not _is_real(self.top_p) or not 0 < self.top_p <= 1:
            _bad(f"top_p must be in (0, 1] (1 disables it), got {self.top_p!r}")
        _check_real(
            "repetition_penalty",
            self.repetition_penalty,
            0.01,
            10,
            "a number from 0.01 to 10 (1 disables it)",
        )
        for name in ("presence_penalty", "frequency_penalty"):
            _check_real(
                name, getattr(self, name), -MAX_PENALTY, MAX_PENALTY, "a number from -2 to 2 (0 disables it)"
            )
        self._normalize_logit_bias()
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs, 0, MAX_TOP_LOGPROBS, "the number of alternatives to report")
        if self.seed is not None:
            _check_int("seed", self.seed, MIN_SEED, MAX_SEED, "an integer that fits in 64 bits")
        self._normalize_stops()
        object.__setattr__(self, "logits_processors", tuple(self.logits_processors))
        if not all(callable(f) for f in self.logits_processors):
            _bad("logits_processors must be callables fn(output_token_ids, logits) -> logits")

    def _normalize_logit_bias(self) -> None:
        pairs = self.logit_bias.items() if isinstance(self.logit_bias, Mapping) else self.logit_bias
        normalized: dict[int, float] = {}
        for pair in pairs:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                _bad(f"logit_bias must map token ids to biases, got {self.logit_bias!r:.200}")
            key, bias = pair
            token_id = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else key
            _check_int("logit_bias keys", token_id, 0, MAX_TOKENS, "token ids (decimal integers)")
            _check_real(
                f"logit_bias[{key!r}]", bias, -MAX_LOGIT_BIAS, MAX_LOGIT_BIAS, "a number from -100 to 100"
            )
            normalized[token_id] = float(bias)
        if len(normalized) > MAX_LOGIT_BIAS_TOKENS:
            _bad(f"logit_bias takes at most {MAX_LOGIT_BIAS_TOKENS} tokens, got {len(normalized)}")
        object.__setattr__(self, "logit_bias", tuple(sorted(normalized.items())))

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1.0

    @property
    def edits_logits(self) -> bool:
        """True when the sampler changes this row's logits before drawing (processors, penalties, bias)."""
        return bool(self.logits_processors or self.logit_bias) or self.has_penalties

    @property
    def needs_output_ids(self) -> bool:
        """True when sampling reads the tokens generated so far (processors, presence and frequency)."""
        return bool(self.logits_processors) or self.presence_penalty != 0 or self.frequency_penalty != 0

    def _normalize_stops(self) -> None:
        """`stop` and `stop_token_ids` as tuples, each bounded: the detokenizer checks every stop
        string after every token, on the kernel's thread."""
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if isinstance(self.stop, list | tuple) and len(self.stop) > MAX_STOP_STRINGS:
            _bad(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(self.stop)}")
        if not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in self.stop):
            _bad(
                f"stop must be a list of non-empty strings of at most {MAX_STOP_CHARS} characters, "
                f"got {self.stop!r:.200}"
            )
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            _bad(f"stop_token_ids takes at most {MAX_STOP_TOKEN_IDS} ids, got {len(self.stop_token_ids)}")
        for token_id in self.stop_token_ids:
            _check_int("stop_token_ids", token_id, 0, MAX_TOKENS, "non-negative integers (token ids)")

    @property
    def is_greedy(self) -> bool:
        """Temperature 0, or one so small that dividing logits by it overflows (vLLM's rule)."""
        return self.temperature < GREEDY_BELOW_TEMPERATURE


def _bad(message: str) -> None:
    raise InvalidSamplingParamsError(message)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: object, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _bad(f"{name} must be {what}, from {low} to {high}; got {value!r:.100}")


def _check_real(name: str, value: object, low: float, high: float, what: str) -> None:
    if not _is_real(value) or not low <= value <= high:  # type: ignore[operator]
        _bad(f"{name} must be {what}; got {value!r:.100}")


@dataclass(frozen=True)
class TokenLogprobs:
    """A sampled token's log-probability and its `logprobs` likeliest alternatives (id, logprob),
    likeliest first, from the logits the draw used: after logits processors, penalties and bias,
    before temperature, top-k and top-p (so at temperature 0 the token is the first alternative)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
