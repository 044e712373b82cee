"""The app's personal-data policy, applied once in the system call path (`privacy/` does the work):
on prompts before they are tokenized (so no value reaches the model, its KV cache, the prefix cache
or the audit row), on documents before they are stored, and on the text each process sends back
(placeholders restored, streams included). Also `analyze_pii`, for `/os/pii/analyze`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from llmasos.errors import InvalidRequestError, LLMasOSError
from llmasos.kernel.kernel import Event
from llmasos.privacy.entities import Detection
from llmasos.privacy.guard import PrivacyGuard
from llmasos.privacy.pseudonyms import StreamRestorer
from llmasos.security.apps import App


class PrivacyCalls:
    """Mixed into `Syscalls`; needs its `record`, and `privacy` and `_restorers` set in __init__."""

    privacy: PrivacyGuard
    _restorers: dict[int, StreamRestorer]
    record: Callable[..., None]

    def analyze_pii(self, app: App, text: str) -> list[Detection]:
        """The personal data in `text` (types and spans; the caller has the values already)."""
        started = time.monotonic()
        found = self.privacy.detect(text)
        self.privacy.count(app.name, "analyze", found)
        self.record(app.name, "pii.analyze", "", duration_s=time.monotonic() - started)
        return found

    def pii_counts(self) -> dict[tuple[str, str, str], int]:
        """(app, direction, entity type) -> detections so far, for /metrics (never a value)."""
        return self.privacy.counts()

    def private_text(self, app: App, direction: str, text: str, what: str) -> str:
        """`text` as the app's policy for `direction` makes it (off: unchanged)."""
        mode = getattr(app.pii, direction)
        return self.privacy.apply(app.name, app.identity, direction, mode, text, what)

    def _private_messages(self, app: App, call: str, model: str, messages: list[dict]) -> list[dict]:
        """Chat messages with the prompts policy applied to every text in them (contents, text
        parts, tool-call arguments); a refusal is audited as the call's."""
        if app.pii.prompts == "off":
            return messages
        return self._audited_refusal(
            app, call, model, lambda: [self._private_message(app, m) for m in messages]
        )

    def _private_prompt(self, app: App, call: str, model: str, prompt: str) -> str:
        if app.pii.prompts == "off":
            return prompt
        return self._audited_refusal(
            app, call, model, lambda: self.private_text(app, "prompts", prompt, "the prompt")
        )

    def _private_message(self, app: App, message: dict) -> dict:
        def private(text: Any) -> Any:
            return self.private_text(app, "prompts", text, "the prompt") if isinstance(text, str) else text

        message = dict(message)
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = [
                {**part, "text": private(part.get("text"))} if isinstance(part, dict) else part
                for part in content
            ]
        else:
            message["content"] = private(content)
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [_with_private_arguments(call, private) for call in message["tool_calls"]]
        return message

    def _audited_refusal(self, app: App, call: str, model: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return fn()
        except LLMasOSError as err:
            self.record(app.name, call, model, err, duration_s=time.monotonic() - started)
            raise

    # ---- documents and memory -------------------------------------------------------------------

    def _private_document(self, app: App, filename: str, content: bytes) -> bytes:
        """A file's bytes as the documents policy stores them. Only text can be read for personal
        data: another file is refused under a policy, rather than stored unread."""
        if app.pii.documents == "off":
            return content
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(
                f"{filename!r} is not UTF-8 text, and app {app.name!r} stores documents under a "
                f"personal-data policy ({app.pii.documents}) that must read them: upload its text"
            ) from None
        return self.private_text(app, "documents", text, f"the document {filename!r}").encode("utf-8")

    def _private_value(self, app: App, value: Any) -> Any:
        """A key-value entry (any JSON) with the documents policy applied to each string in it."""
        if app.pii.documents == "off":
            return value
        return _each_string(value, lambda text: self.private_text(app, "documents", text, "the value"))

    def _restored_value(self, app: App, value: Any) -> Any:
        if self.privacy.output_restorer(app.identity, app.pii) is None:
            return value
        return _each_string(value, lambda text: self._restored_text(app, text))

    def _private_query(self, app: App, query: str) -> str:
        """A search query with the values a pseudonymized store holds as placeholders put as those."""
        if app.pii.documents != "pseudonymize":
            return query
        return self.privacy.apply(app.name, app.identity, "documents", "pseudonymize", query, "the query")

    def _restored_text(self, app: App, text: str) -> str:
        """Stored text as the outputs policy shows it to the app (placeholders restored or not)."""
        restorer = self.privacy.output_restorer(app.identity, app.pii)
        return text if restorer is None else restorer.feed(text) + restorer.flush()

    def _restored_bytes(self, app: App, content: bytes) -> bytes:
        if app.pii.outputs == "off":
            return content
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:  # not text: nothing in it was pseudonymized
            return content
        return self._restored_text(app, text).encode("utf-8")

    def _restored_hits(self, app: App, hits: list[Any]) -> list[Any]:
        """Search results as the outputs policy shows them."""
        return [replace(h, text=self._restored_text(app, h.text)) for h in hits]

    # ---- what the app receives ------------------------------------------------------------------

    def _watch_output(self, app: App, pid: int) -> None:
        """Restore (or redact) placeholders in what process `pid` sends back, per the app's policy."""
        restorer = self.privacy.output_restorer(app.identity, app.pii)
        if restorer is not None:
            self._restorers[pid] = restorer

    def _restored_events(self, pid: int, events: Iterator[Event]) -> Iterator[Event]:
        if pid not in self._restorers:
            yield from events
            return
        for event in events:
            yield from self._restore(pid, event)

    def _restoring(self, pid: int, callback: Callable[[Event], None]) -> Callable[[Event], None]:
        if pid not in self._restorers:
            return callback

        def deliver(event: Event) -> None:
            for restored in self._restore(pid, event):
                callback(restored)

        return deliver

    def _restore(self, pid: int, event: Event) -> list[Event]:
        """The event with its text restored; at the end, what was held back goes out before it."""
        restorer = self._restorers.get(pid)
        if restorer is None:
            return [event]
        if not event.finished:
            return [replace(event, text=restorer.feed(event.text))]
        self._restorers.pop(pid, None)
        tail = restorer.flush()
        return [Event(pid, text=tail), event] if tail else [event]


def _each_string(value: Any, change: Callable[[str], str]) -> Any:
    """`value` (JSON: dicts, lists, scalars) with `change` applied to every string value (not keys)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: _each_string(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_each_string(v, change) for v in value]
    return value


def _with_private_arguments(call: Any, private: Callable[[Any], Any]) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function = call["function"]
    return {**call, "function": {**function, "arguments": private(function.get("arguments"))}}
