"""A request's sampling fields -> the engine's `SamplingParams`: the one place that mapping lives.

Every interface names the fields as OpenAI's request body does (`max_tokens`, `temperature`,
`top_p`, `top_k`, `seed`, `stop`, ...), whether they came from an HTTP body, SDK keyword arguments
or CLI options, so each of them hands its request here instead of building `SamplingParams` itself
and drifting from the others. Values are checked by `SamplingParams` itself (one message per field,
`InvalidSamplingParamsError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from llmasos.engine.sampling_params import SamplingParams
from llmasos.errors import InvalidSamplingParamsError

#: OpenAI's newer name for `max_tokens`; when both are given, this one wins, as in OpenAI's API.
MAX_TOKENS_ALIAS = "max_completion_tokens"
#: Chat's spelling of logprobs: `logprobs: true` with `top_logprobs: k` (completions send `logprobs: k`).
TOP_LOGPROBS = "top_logprobs"
#: Every field a request may set: SamplingParams' own names and the aliases above.
SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams)) | {
    MAX_TOKENS_ALIAS,
    TOP_LOGPROBS,
}


def sampling_params(fields: Mapping[str, Any], *, choice: int = 0) -> SamplingParams:
    """The SamplingParams of a request's `fields`.

    Fields that are absent or None take SamplingParams' defaults; names that are not sampling
    fields (`model`, `messages`, `stream`, `n`, ...) are ignored, so a whole request body may be
    passed. A single `stop` string is a one-item list. `choice` is the index of one of a request's
    `n` choices: a seeded request's seed is offset by it, so each choice differs from its siblings
    and each is still reproducible.
    """
    given = {name: value for name, value in fields.items() if name in SAMPLING_FIELDS and value is not None}
    if MAX_TOKENS_ALIAS in given:
        given["max_tokens"] = given.pop(MAX_TOKENS_ALIAS)
    if "stop" in given:
        given["stop"] = _stop_strings(given["stop"])
    if isinstance(given.get("logprobs"), bool) or TOP_LOGPROBS in given:
        _chat_logprobs(given)
    seed = given.get("seed")
    if choice and isinstance(seed, int) and not isinstance(seed, bool):
        given["seed"] = seed + choice
    return SamplingParams(**given)


def _chat_logprobs(given: dict[str, Any]) -> None:
    """Chat's `logprobs: bool` + `top_logprobs: k` as SamplingParams' one `logprobs: k | None`."""
    wanted, top = given.pop("logprobs", False), given.pop(TOP_LOGPROBS, None)
    if top is not None and wanted is not True:
        raise InvalidSamplingParamsError("top_logprobs needs logprobs: true; set both or neither")
    if wanted:
        given["logprobs"] = top or 0


def _stop_strings(stop: Any) -> tuple[str, ...]:
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list | tuple):
        return tuple(stop)
    raise InvalidSamplingParamsError(f"stop must be a string or a list of strings, got {stop!r}")
