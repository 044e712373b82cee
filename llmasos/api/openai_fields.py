"""OpenAI request fields this server cannot honour: refused with a 400 that names the field when a
request sets them to anything but their neutral value, so none is silently ignored (issue 22).

The fields accepted only for compatibility (no effect here, listed in the README under "Accepted
for compatibility") are in `COMPATIBILITY_ONLY`; any other field OpenAI defines is honoured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from llmasos.errors import InvalidRequestError

#: Accepted and without effect here; the README lists each with the reason.
COMPATIBILITY_ONLY = (
    "user",
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "reasoning_effort",
    "verbosity",
    "stream_options.include_obfuscation",
)


def _text_only(value: Any) -> bool:
    return isinstance(value, list) and all(m == "text" for m in value)


#: field -> (is the value neutral?, what to do instead), per endpoint.
_CHAT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "audio": (lambda v: v is None, "the models here write text only; leave audio out"),
    "modalities": (lambda v: v is None or _text_only(v), 'the models here write text only; use ["text"]'),
    "prediction": (lambda v: v is None, "predicted outputs are not supported; leave prediction out"),
    "web_search_options": (lambda v: v is None, "this server does not search the web; leave it out"),
}
_COMPLETIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "best_of": (lambda v: v is None or v == 1, "best_of is not supported; ask for n choices instead"),
}


def refuse_unsupported(endpoint: str, data: Mapping[str, Any]) -> None:
    """InvalidRequestError for the first field of `data` this server cannot honour (`endpoint`:
    "chat" or "completions")."""
    table = _CHAT if endpoint == "chat" else _COMPLETIONS
    for name, (is_neutral, advice) in table.items():
        if name in data and not is_neutral(data[name]):
            raise InvalidRequestError(f"{name}: {advice}")
