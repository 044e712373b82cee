"""The system calls over each app's conversations and stored responses (`llmasos.data`).

Like the other data calls, each takes the calling `App`, opens that app's data from its identity
alone (another app's ids are simply not there: 404), checks the capability `tool:conversations`
and writes an audit row. The memory calls (`conversation_memory`, `recall_items`, ...) serve the
context assembly of `services/memory.py` inside a response call, whose model call is audited itself.

Personal data: what is stored (items, core facts, summaries) goes through the app's `documents`
policy first (pseudonymized, redacted or refused, as documents are), and what the app reads back
through its `outputs` policy (placeholders restored); the memory calls hand the stored text, with
its placeholders, to the model's context. At rest it is all sealed under the app's data key
(data/conversations.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llmasos.data import conversations as conv
from llmasos.data import responses as resp
from llmasos.data.app_data import AppData
from llmasos.data.pages import PageRequest
from llmasos.errors import InvalidRequestError
from llmasos.security.apps import App

CAPABILITY = "conversations"


class ConversationCalls:
    """Mixed into `Syscalls` (with `DataCalls`, which provides `_data` and `trail`, and `PrivacyCalls`,
    which provides `private_text`, `_private_query` and `_restored_text`)."""

    trail: Any
    privacy: Any  # PrivacyGuard
    private_text: Any
    _private_query: Any
    _restored_text: Any

    def _stored(self, app: App, text: str, what: str, *, written_by_model: bool = False) -> str:
        """`text` as the app's documents policy stores it. What the model wrote (an answer, a
        summary) is redacted where the policy blocks: it was computed already, and refusing to keep
        it would fail the response after the fact."""
        mode = app.pii.documents
        if mode == "off":
            return text
        if mode == "block" and written_by_model:
            return self.privacy.apply(app.name, app.identity, "documents", "redact", text, what)
        return self.private_text(app, "documents", text, what)

    def check_storable(self, app: App, messages: list[tuple[str, str]]) -> None:
        """Refuse, before any model runs, messages that the app's documents policy would refuse to
        keep (`block`): a response stores its input only after the model has answered."""
        if app.pii.documents == "block":
            self._stored_messages(app, messages)

    def _stored_messages(self, app: App, messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(role, self._stored(app, text, "the conversation item")) for role, text in messages]

    def _stored_core(self, app: App, core: list[str] | None) -> list[str] | None:
        return None if core is None else [self._stored(app, fact, "the core fact") for fact in core]

    def _shown(self, app: App, obj: dict) -> dict:
        """An item or conversation object as the app's outputs policy shows it."""
        if app.pii.outputs == "off":
            return obj
        obj = dict(obj)
        if isinstance(obj.get("content"), list):
            obj["content"] = [
                {**part, "text": self._restored_text(app, part["text"])} if "text" in part else part
                for part in obj["content"]
            ]
        if isinstance(obj.get("core_memory"), list):
            obj["core_memory"] = [self._restored_text(app, fact) for fact in obj["core_memory"]]
        if isinstance(obj.get("data"), list):
            obj["data"] = [self._shown(app, item) for item in obj["data"]]
        return obj

    def _conversations(self, app: App) -> AppData:
        return self._data(app, CAPABILITY)  # type: ignore[attr-defined]

    # ---- conversations and their items ----------------------------------------------------------

    def create_conversation(
        self, app: App, metadata: dict | None = None, items: Any = None, core: list[str] | None = None
    ) -> dict:
        with self.trail.audited(app, "conversations.create"):
            messages = self._stored_messages(app, conv.message_items(items, "items")) if items else []
            created = conv.create_conversation(
                self._conversations(app), metadata, messages, self._stored_core(app, core)
            )
            return self._shown(app, created)

    def get_conversation(self, app: App, conversation_id: str) -> dict:
        with self.trail.audited(app, "conversations.get", conversation_id):
            return self._shown(app, conv.get_conversation(self._conversations(app), conversation_id))

    def update_conversation(
        self, app: App, conversation_id: str, metadata: dict | None, core: list[str] | None = None
    ) -> dict:
        with self.trail.audited(app, "conversations.update", conversation_id):
            if metadata is None and core is None:
                raise InvalidRequestError("nothing to update: send metadata or core_memory")
            updated = conv.update_conversation(
                self._conversations(app), conversation_id, metadata, self._stored_core(app, core)
            )
            return self._shown(app, updated)

    def append_core_memory(self, app: App, conversation_id: str, fact: str) -> list[str]:
        """Add a fact to the conversation's core block (the app, or its model through the memory
        tools); the new block."""
        with self.trail.audited(app, "conversations.core_memory.append", conversation_id):
            stored = self._stored(app, fact, "the core fact", written_by_model=True)
            return conv.edit_core(self._conversations(app), conversation_id, stored)

    def replace_core_memory(self, app: App, conversation_id: str, old: str, new: str) -> list[str]:
        """Replace the core fact `old` with `new` (`new` empty: remove it); the new block."""
        with self.trail.audited(app, "conversations.core_memory.replace", conversation_id):
            stored = self._stored(app, new, "the core fact", written_by_model=True) if new else new
            return conv.edit_core(self._conversations(app), conversation_id, stored, old)

    def delete_conversation(self, app: App, conversation_id: str) -> dict:
        with self.trail.audited(app, "conversations.delete", conversation_id):
            return conv.delete_conversation(self._conversations(app), conversation_id)

    def add_conversation_items(self, app: App, conversation_id: str, items: Any) -> dict:
        with self.trail.audited(app, "conversations.items.create", conversation_id):
            messages = self._stored_messages(app, conv.message_items(items, "items"))
            return self._shown(app, conv.add_items(self._conversations(app), conversation_id, messages))

    def list_conversation_items(self, app: App, conversation_id: str, page: PageRequest) -> dict:
        with self.trail.audited(app, "conversations.items.list", conversation_id):
            return self._shown(app, conv.list_items(self._conversations(app), conversation_id, page))

    def get_conversation_item(self, app: App, conversation_id: str, item_id: str) -> dict:
        with self.trail.audited(app, "conversations.items.get", f"{conversation_id}/{item_id}"):
            return self._shown(app, conv.get_item(self._conversations(app), conversation_id, item_id))

    def delete_conversation_item(self, app: App, conversation_id: str, item_id: str) -> dict:
        with self.trail.audited(app, "conversations.items.delete", f"{conversation_id}/{item_id}"):
            return self._shown(app, conv.delete_item(self._conversations(app), conversation_id, item_id))

    # ---- stored responses -----------------------------------------------------------------------

    def get_response(self, app: App, response_id: str) -> dict:
        with self.trail.audited(app, "responses.get", response_id):
            return resp.get_response(self._conversations(app), response_id)

    def response_context(self, app: App, response_id: str) -> dict:
        with self.trail.audited(app, "responses.context", response_id):
            return resp.response_context(self._conversations(app), response_id)

    def response_input_items(self, app: App, response_id: str, page: PageRequest) -> dict:
        with self.trail.audited(app, "responses.input_items", response_id):
            return self._shown(app, resp.response_input_items(self._conversations(app), response_id, page))

    def delete_response(self, app: App, response_id: str) -> dict:
        with self.trail.audited(app, "responses.delete", response_id):
            return resp.delete_response(self._conversations(app), response_id)

    # ---- memory, for the context assembly of a response -----------------------------------------

    def response_place(
        self, app: App, conversation_id: str | None, previous_response_id: str | None
    ) -> resp.Place:
        """Where a new response reads its history: a conversation, a chain's thread, or nowhere."""
        with self.trail.audited(app, "responses.place", conversation_id or previous_response_id or ""):
            if conversation_id and previous_response_id:
                raise InvalidRequestError(
                    "send conversation or previous_response_id, not both: a conversation keeps its "
                    "own history"
                )
            data = self._conversations(app)
            if conversation_id:
                return resp.place_in(data, conversation_id)
            if previous_response_id:
                return resp.place_after(data, previous_response_id)
            return resp.Place(None)

    def conversation_memory(self, app: App, conversation_id: str) -> conv.Memory:
        return conv.memory(self._conversations(app), conversation_id)

    def conversation_items_after(
        self, app: App, conversation_id: str, seq: int, upto: int | None = None
    ) -> list[conv.Item]:
        return conv.items_after(self._conversations(app), conversation_id, seq, upto)

    def recall_items(
        self, app: App, conversation_id: str, query: str, before_seq: int, limit: int
    ) -> list[conv.Item]:
        query = self._private_query(app, query)  # stored values are placeholders: match them as such
        return conv.recall(self._conversations(app), conversation_id, query, before_seq, limit)

    def remember_token_counts(self, app: App, counts: list[tuple[int, int]], model: str) -> None:
        conv.remember_token_counts(self._conversations(app), counts, model)

    def save_exchange(
        self,
        app: App,
        place: resp.Place,
        response_id: str,
        inputs: list[tuple[str, str]],
        output: str,
        output_id: str,
        body: dict | None,
        context: dict,
    ) -> resp.Stored:
        """Write a response's messages (and the response, when stored) in one transaction."""
        with self.trail.audited(app, "responses.store", response_id):
            inputs = self._stored_messages(app, inputs)
            output = self._stored(app, output, "the answer", written_by_model=True)
            stored = resp.save_exchange(
                self._conversations(app), place, response_id, inputs, output, output_id, body, context
            )
            return replace(
                stored,
                input_items=[self._shown(app, i) for i in stored.input_items],
                output_items=[self._shown(app, i) for i in stored.output_items],
            )

    def set_conversation_summary(
        self, app: App, conversation_id: str, summary: str, upto: int, expected_upto: int
    ) -> bool:
        with self.trail.audited(app, "conversations.summarize", conversation_id):
            summary = self._stored(app, summary, "the summary", written_by_model=True)
            return conv.set_summary(self._conversations(app), conversation_id, summary, upto, expected_upto)
