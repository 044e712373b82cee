"""An app's personal-data policy: what happens to the personal data in each direction.

Directions:
- `prompts`: what the app sends to a model (chat messages, completion prompts). `pseudonymize`
  puts a stable placeholder (`<PERSON_1>`) in each value's place before the model, its KV cache,
  the prefix cache or the audit log see it; `redact` puts the type (`[PERSON]`), for good; `block`
  refuses the request, naming the types found.
- `outputs`: what the app receives back. `pseudonymize` restores the placeholders the model wrote to
  the app's values (streams included); `redact` shows `[PERSON]` instead; `off` shows the
  placeholders as the model wrote them.
- `documents`: files stored for search and memory (pseudonymized, redacted or refused as prompts).
- `audit`: the content the audit log keeps for apps that opt in to it (values replaced, never kept).

`off` everywhere is the default: an app without a policy is served exactly as before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llmasos.errors import InvalidRequestError

MODES = ("off", "pseudonymize", "redact", "block")
DIRECTIONS = ("prompts", "outputs", "documents", "audit")
#: What each direction can do; a uniform `block` means `redact` where refusing makes no sense (an
#: answer already computed, an audit row of a call already allowed).
_ACCEPTED = {
    "prompts": MODES,
    "documents": MODES,
    "outputs": ("off", "pseudonymize", "redact"),
    "audit": ("off", "pseudonymize", "redact"),
}


@dataclass(frozen=True)
class PiiPolicy:
    prompts: str = "off"
    outputs: str = "off"
    documents: str = "off"
    audit: str = "off"

    def __post_init__(self) -> None:
        for direction in DIRECTIONS:
            mode = getattr(self, direction)
            if mode not in _ACCEPTED[direction]:
                raise InvalidRequestError(
                    f"pii {direction}={mode!r} is not a mode; {direction} takes "
                    f"{', '.join(_ACCEPTED[direction])}"
                )

    @property
    def is_off(self) -> bool:
        return all(getattr(self, d) == "off" for d in DIRECTIONS)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def uniform(cls, mode: str) -> PiiPolicy:
        """`mode` in every direction (or `redact` where a direction cannot `block`)."""
        if mode not in MODES:
            raise InvalidRequestError(f"pii mode {mode!r} is not one of {', '.join(MODES)}")
        return cls(**{d: mode if mode in _ACCEPTED[d] else "redact" for d in DIRECTIONS})

    @classmethod
    def parse(cls, specs: str | list[str] | dict | PiiPolicy | None) -> PiiPolicy:
        """A policy from `MODE` (every direction), `DIRECTION=MODE` items (the rest off, or what a
        bare MODE before them set), a mapping of directions to modes, or None (off)."""
        if specs is None:
            return cls()
        if isinstance(specs, PiiPolicy):
            return specs
        if isinstance(specs, dict):
            unknown = set(specs) - set(DIRECTIONS)
            if unknown:
                raise InvalidRequestError(
                    f"pii has no direction {sorted(unknown)[0]!r}; directions: {', '.join(DIRECTIONS)}"
                )
            return cls(**specs)
        fields: dict[str, str] = {}
        for spec in [specs] if isinstance(specs, str) else specs:
            for item in (s.strip() for s in spec.split(",") if s.strip()):
                direction, sep, mode = item.partition("=")
                if not sep:
                    fields = cls.uniform(item).as_dict()
                elif direction not in DIRECTIONS:
                    raise InvalidRequestError(
                        f"pii {item!r}: no direction {direction!r}; use one of {', '.join(DIRECTIONS)} "
                        f"(e.g. prompts=pseudonymize) or a bare mode for all of them"
                    )
                else:
                    fields[direction] = mode
        return cls(**fields)
