"""The privacy guard: an app's policy applied to one text in one direction, the vaults that make
placeholders stable per app, and the count of detections per app, direction and type (the only
trace a detection leaves: never a value).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from llmasos.errors import PersonalDataBlockedError
from llmasos.privacy.detector import PiiDetector, shared_detector
from llmasos.privacy.entities import Detection
from llmasos.privacy.policy import PiiPolicy
from llmasos.privacy.pseudonyms import (
    PseudonymVault,
    StreamRestorer,
    VaultStore,
    outside_placeholders,
    pseudonymize,
    redact,
    redact_placeholders,
)


class PrivacyGuard:
    """Applies apps' policies. One per kernel; the detector loads on the first text it must read."""

    def __init__(
        self,
        detector: Callable[[], PiiDetector] = shared_detector,
        vault_store: Callable[[str], VaultStore] | None = None,
    ) -> None:
        """`vault_store(app identity)`: where that app's placeholders are kept across restarts
        (None: in memory only)."""
        self._detector = detector
        self._vault_store = vault_store
        self._vaults: dict[str, PseudonymVault] = {}
        self._lock = threading.Lock()
        self.detections: Counter[tuple[str, str, str]] = Counter()  # (app, direction, type) -> count

    def detect(self, text: str) -> list[Detection]:
        return self._detector().detect(text)

    def vault(self, app_identity: str) -> PseudonymVault:
        with self._lock:
            vault = self._vaults.get(app_identity)
            if vault is None:
                store = self._vault_store(app_identity) if self._vault_store is not None else None
                vault = self._vaults[app_identity] = PseudonymVault(store)
            return vault

    def forget(self, app_identity: str) -> None:
        """Drop an app's vault (the app was removed): its placeholders can no longer be restored."""
        with self._lock:
            self._vaults.pop(app_identity, None)

    def apply(self, app_name: str, app_identity: str, direction: str, mode: str, text: str, what: str) -> str:
        """`text` as `mode` makes it; PersonalDataBlockedError naming the types when `mode` is block.
        `what` names the text in that message ("the prompt", "the document")."""
        if mode == "off" or not text or not text.strip():
            return text
        found = outside_placeholders(text, self.detect(text))
        self.count(app_name, direction, found)
        if not found:
            return text
        if mode == "block":
            types = sorted({d.entity_type for d in found})
            raise PersonalDataBlockedError(
                f"{what} contains personal data ({', '.join(types)}) and app {app_name!r} blocks it in "
                f"{direction}: remove it, or ask an admin for another policy "
                f"(`llmasos apps update {app_name} --pii {direction}=pseudonymize`)",
                types,
            )
        if mode == "redact":
            return redact(text, found)
        return pseudonymize(text, found, self.vault(app_identity))

    def count(self, app_name: str, direction: str, found: list[Detection]) -> None:
        with self._lock:
            for d in found:
                self.detections[(app_name, direction, d.entity_type)] += 1

    def counts(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self.detections)

    def output_restorer(self, app_identity: str, policy: PiiPolicy) -> StreamRestorer | None:
        """What turns the model's placeholders into what the app receives (None: as written)."""
        if policy.outputs == "pseudonymize":
            return StreamRestorer(self.vault(app_identity).restore)
        if policy.outputs == "redact":
            return StreamRestorer(redact_placeholders)
        return None
