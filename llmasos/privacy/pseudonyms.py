"""What is done to personal data once found: a stable placeholder in its place (`<PERSON_1>`), kept
in the app's vault so that what comes back can be restored; or its type (`[PERSON]`), for good.

The vault is kept in memory and, given a store, in the app's database with every value sealed under
the app's data key (never in the clear: not in `$LLMASOS_HOME`, not in a log); deleting the app
destroys that key with it. Placeholders are stable per app across restarts, so a value pseudonymized
in a stored conversation or document and the same value in a later prompt read alike to the model,
and stored text is restored after a restart.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from llmasos.privacy.entities import Detection

PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*)_(\d+)>")
#: What a placeholder's beginning can look like, cut anywhere: "<", "<PER", "<PERSON_", "<PERSON_1".
_PLACEHOLDER_PREFIX = re.compile(r"<(?:[A-Z][A-Z_]*\d*)?")
_LONGEST_PLACEHOLDER = 40


class VaultStore(Protocol):
    """Where a vault keeps its pairs across restarts (`data/pseudonym_store.py`: the app's database,
    each value sealed under the app's data key)."""

    def load(self) -> list[tuple[str, str]]:
        """Every (placeholder, value) kept so far."""
        ...

    def add(self, placeholder: str, value: str) -> None:
        """Keep a new pair (durably, before the placeholder is used)."""
        ...


class PseudonymVault:
    """One app's values and their placeholders, both ways. Thread-safe.

    With a `store`, the pairs outlive the process: text stored with placeholders (conversations,
    documents, key-value data) is restored after a restart, and a new value never gets a number an
    earlier value had (which would restore stored text to the wrong person)."""

    def __init__(self, store: VaultStore | None = None) -> None:
        self._placeholders: dict[str, str] = {}  # value -> placeholder
        self._values: dict[str, str] = {}  # placeholder -> value
        self._numbers: Counter[str] = Counter()  # entity type -> highest number given
        self._lock = threading.Lock()
        self._store = store
        for placeholder, value in store.load() if store is not None else ():
            self._remember(placeholder, value)

    def _remember(self, placeholder: str, value: str) -> None:
        self._placeholders[value] = placeholder
        self._values[placeholder] = value
        match = PLACEHOLDER.fullmatch(placeholder)
        if match:
            entity_type, number = match.group(1), int(match.group(2))
            self._numbers[entity_type] = max(self._numbers[entity_type], number)

    def __len__(self) -> int:
        return len(self._values)

    def placeholder(self, entity_type: str, value: str) -> str:
        """The value's placeholder, the same every time it is asked for."""
        with self._lock:
            known = self._placeholders.get(value)
            if known is not None:
                return known
            placeholder = f"<{entity_type}_{self._numbers[entity_type] + 1}>"
            if self._store is not None:
                self._store.add(placeholder, value)
            self._remember(placeholder, value)
            return placeholder

    def restore(self, text: str) -> str:
        """`text` with each placeholder of this vault back to its value (others left as they are)."""
        return PLACEHOLDER.sub(lambda m: self._values.get(m.group(0), m.group(0)), text)


def pseudonymize(text: str, detections: list[Detection], vault: PseudonymVault) -> str:
    return _replace(text, detections, lambda d: vault.placeholder(d.entity_type, text[d.start : d.end]))


def redact(text: str, detections: list[Detection]) -> str:
    return _replace(text, detections, lambda d: f"[{d.entity_type}]")


def redact_placeholders(text: str) -> str:
    """Placeholders shown as their type only: `<PERSON_1>` -> `[PERSON]`."""
    return PLACEHOLDER.sub(lambda m: f"[{m.group(1)}]", text)


def outside_placeholders(text: str, detections: list[Detection]) -> list[Detection]:
    """The detections that touch no placeholder already in `text` (a pseudonymized document quoted in
    a prompt must keep its placeholders, not have them read as names)."""
    taken = [m.span() for m in PLACEHOLDER.finditer(text)]
    return [d for d in detections if not any(d.start < end and start < d.end for start, end in taken)]


def _replace(text: str, detections: list[Detection], by: Callable[[Detection], str]) -> str:
    parts, position = [], 0
    for d in sorted(detections, key=lambda d: d.start):
        parts += [text[position : d.start], by(d)]
        position = d.end
    return "".join(parts) + text[position:]


class StreamRestorer:
    """Applies `restore` to a stream of text deltas, so that a placeholder cut across deltas
    (`<PERS` + `ON_1>`) is restored whole: a delta's tail that could begin a placeholder is held
    back until the next delta shows what it is. Text that cannot is passed on at once."""

    def __init__(self, restore: Callable[[str], str]) -> None:
        self.restore = restore
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        cut = text.rfind("<")
        if cut != -1 and len(text) - cut <= _LONGEST_PLACEHOLDER and _PLACEHOLDER_PREFIX.fullmatch(text, cut):
            text, self._held = text[:cut], text[cut:]
        else:
            self._held = ""
        return self.restore(text)

    def flush(self) -> str:
        """What is held back, at the stream's end."""
        text, self._held = self._held, ""
        return self.restore(text)
