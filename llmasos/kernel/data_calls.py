"""The system calls over each app's data (`llmasos.data`): files, vector stores and their search,
the key-value store, quotas and usage.

Every call takes the calling `App` and opens that app's data from its identity alone; an id of another
app's file or store is simply not there (404). Each call checks the app's capability (`tool:files`,
`tool:vector_stores`, `tool:kv`; `tool:*` grants them all) and writes one audit row. Ingestion runs in
the background; its embedding tokens are charged to the app in a `data.ingest` row when it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmasos.data import files as files_api
from llmasos.data import kv as kv_api
from llmasos.data import vector_stores as stores_api
from llmasos.data.app_data import AppData, app_data, delete_app_data, indexes
from llmasos.data.chunking import ChunkingStrategy
from llmasos.data.export import Restore, export_app_data
from llmasos.data.ingest import Embedder, Ingested, Ingestor, reindex_store
from llmasos.data.pages import PageRequest
from llmasos.data.quota import set_limits, usage
from llmasos.data.search import Hit, SearchOptions, search
from llmasos.data.vector_stores import touch_store
from llmasos.errors import (
    DataNotFoundError,
    InvalidRequestError,
    LLMasOSError,
    PermissionDeniedError,
    ToolUnavailableError,
)
from llmasos.security.apps import App

if TYPE_CHECKING:
    from llmasos.kernel.call_trail import CallTrail
    from llmasos.security.apps import AppRegistry

MAX_QUERY_CHARS = 4096


class DataCalls:
    """Mixed into `Syscalls`, which provides `apps`, `trail` and `record`."""

    apps: AppRegistry
    trail: CallTrail
    record: Callable[..., None]
    _embedder_factory: Callable[[], Embedder] | None = None
    _ingestor: Ingestor | None = None
    _data_lock = threading.Lock()
    _owner_names: dict[str, str]
    _private_document: Callable[[App, str, bytes], bytes]  # from PrivacyCalls
    _private_query: Callable[[App, str], str]
    _restored_hits: Callable[[App, list[Hit]], list[Hit]]
    _restored_text: Callable[[App, str], str]
    _private_value: Callable[[App, Any], Any]
    _restored_value: Callable[[App, Any], Any]
    _restored_bytes: Callable[[App, bytes], bytes]

    # ---- wiring ---------------------------------------------------------------------------------

    def use_embedder(self, factory: Callable[[], Embedder], *, replace: bool = True) -> None:
        """Set what embeds chunks and queries (the interfaces pass tools.embed.load_embedder: the
        kernel sits below the tools and cannot import it); with `replace=False`, only if none is set."""
        if replace or self._embedder_factory is None:
            self._embedder_factory = factory

    def _embedder(self) -> Embedder:
        if self._embedder_factory is None:
            raise ToolUnavailableError(
                "this kernel has no embedding model set; start it through `llmasos serve`"
            )
        return self._embedder_factory()

    def _ingest(self) -> Ingestor:
        with self._data_lock:
            if self._ingestor is None:
                self._owner_names = {}
                self._ingestor = Ingestor(self._embedder, self._ingested)
            return self._ingestor

    def close_ingestion(self) -> None:
        """Stop the ingestion thread (a closing kernel); the files it had queued stay in progress."""
        with self._data_lock:
            ingestor, self._ingestor = self._ingestor, None
        if ingestor is not None:
            ingestor.close()

    def resume_ingestion(self) -> int:
        """Queue again files a stopped server left in progress; how many."""
        return self._ingest().resume()

    def _ingested(self, owner: str, store_id: str, file_id: str, result: Ingested) -> None:
        name = self._owner_names.get(owner, owner)
        self.record(
            name,
            "data.ingest",
            f"{store_id}/{file_id}",
            outcome=result.status,
            tokens_in=result.embedding_tokens,
        )

    def _data(self, app: App, capability: str) -> AppData:
        if not app.allows("tool", capability):
            raise PermissionDeniedError(
                f"app {app.name!r} may not use {capability}; an admin can grant tool:{capability}"
            )
        return app_data(app.identity)

    # ---- export ---------------------------------------------------------------------------------

    def export_app_data(self, caller: App, name: str, folder: Path) -> dict:
        """Write app `name`'s files, stores, chunks, conversations, responses and key-value data into
        `folder` as JSON lines and original files (`data/export.py`); the manifest. The app itself
        or an admin only; another app's name is not found, as its data is for any other call."""
        with self.trail.audited(caller, "data.export", name):
            if name != caller.name and not caller.is_admin:
                raise DataNotFoundError(f"no app {name!r} whose data you may export; export your own")
            target = caller if name == caller.name else self.apps.get(name)
            restore = Restore(
                text=lambda text: self._restored_text(target, text),
                bytes=lambda content: self._restored_bytes(target, content),
                value=lambda value: self._restored_value(target, value),
            )
            return export_app_data(app_data(target.identity), target.name, folder, restore)

    # ---- files ----------------------------------------------------------------------------------

    def create_file(self, app: App, filename: str, content: bytes, purpose: str = "assistants") -> dict:
        with self.trail.audited(app, "files.create", filename):
            data = self._data(app, "files")
            content = self._private_document(app, filename, content)  # PrivacyCalls
            return files_api.create_file(data, filename, content, purpose)

    def list_files(self, app: App, page: PageRequest, purpose: str | None = None) -> dict:
        with self.trail.audited(app, "files.list"):
            return files_api.list_files(self._data(app, "files"), page, purpose)

    def get_file(self, app: App, file_id: str) -> dict:
        with self.trail.audited(app, "files.get", file_id):
            return files_api.get_file(self._data(app, "files"), file_id)

    def file_content(self, app: App, file_id: str) -> tuple[str, bytes]:
        with self.trail.audited(app, "files.content", file_id):
            filename, content = files_api.file_content(self._data(app, "files"), file_id)
            return filename, self._restored_bytes(app, content)  # PrivacyCalls

    def delete_file(self, app: App, file_id: str) -> dict:
        with self.trail.audited(app, "files.delete", file_id):
            return files_api.delete_file(self._data(app, "files"), file_id)

    # ---- vector stores --------------------------------------------------------------------------

    def create_store(
        self,
        app: App,
        name: str | None = None,
        metadata: dict | None = None,
        file_ids: list[str] | None = None,
        chunking: dict | None = None,
    ) -> dict:
        with self.trail.audited(app, "vector_stores.create", name or ""):
            data = self._data(app, "vector_stores")
            strategy = ChunkingStrategy.from_openai(chunking)
            store = stores_api.create_store(data, name, metadata)
            if file_ids:
                stores_api.attach_files(data, store["id"], file_ids, None, strategy)
                self._queue(app, store["id"], file_ids)
            return stores_api.get_store(data, store["id"])

    def list_stores(self, app: App, page: PageRequest) -> dict:
        with self.trail.audited(app, "vector_stores.list"):
            return stores_api.list_stores(self._data(app, "vector_stores"), page)

    def get_store(self, app: App, store_id: str) -> dict:
        with self.trail.audited(app, "vector_stores.get", store_id):
            return stores_api.get_store(self._data(app, "vector_stores"), store_id)

    def update_store(self, app: App, store_id: str, name: str | None, metadata: dict | None) -> dict:
        with self.trail.audited(app, "vector_stores.update", store_id):
            return stores_api.update_store(self._data(app, "vector_stores"), store_id, name, metadata)

    def delete_store(self, app: App, store_id: str) -> dict:
        with self.trail.audited(app, "vector_stores.delete", store_id):
            return stores_api.delete_store(self._data(app, "vector_stores"), store_id)

    def attach_file(
        self,
        app: App,
        store_id: str,
        file_id: str,
        attributes: dict | None = None,
        chunking: dict | None = None,
    ) -> dict:
        with self.trail.audited(app, "vector_stores.files.create", f"{store_id}/{file_id}"):
            data = self._data(app, "vector_stores")
            attached = stores_api.attach_files(
                data, store_id, [file_id], attributes, ChunkingStrategy.from_openai(chunking)
            )
            self._queue(app, store_id, [file_id])
            return attached[0]

    def get_store_file(self, app: App, store_id: str, file_id: str) -> dict:
        with self.trail.audited(app, "vector_stores.files.get", f"{store_id}/{file_id}"):
            return stores_api.get_store_file(self._data(app, "vector_stores"), store_id, file_id)

    def list_store_files(
        self,
        app: App,
        store_id: str,
        page: PageRequest,
        status: str | None = None,
        batch_id: str | None = None,
    ) -> dict:
        with self.trail.audited(app, "vector_stores.files.list", store_id):
            data = self._data(app, "vector_stores")
            if batch_id is not None:
                stores_api.batch_object(data, store_id, batch_id)  # 404 for an unknown batch
            return stores_api.list_store_files(data, store_id, page, status, batch_id)

    def update_store_file(self, app: App, store_id: str, file_id: str, attributes: dict | None) -> dict:
        with self.trail.audited(app, "vector_stores.files.update", f"{store_id}/{file_id}"):
            return stores_api.update_attributes(
                self._data(app, "vector_stores"), store_id, file_id, attributes
            )

    def store_file_content(self, app: App, store_id: str, file_id: str) -> list[dict]:
        with self.trail.audited(app, "vector_stores.files.content", f"{store_id}/{file_id}"):
            parts = stores_api.parsed_content(self._data(app, "vector_stores"), store_id, file_id)
            return [{**part, "text": self._restored_text(app, part["text"])} for part in parts]

    def detach_file(self, app: App, store_id: str, file_id: str) -> dict:
        with self.trail.audited(app, "vector_stores.files.delete", f"{store_id}/{file_id}"):
            return stores_api.detach_file(self._data(app, "vector_stores"), store_id, file_id)

    def create_batch(
        self,
        app: App,
        store_id: str,
        file_ids: list[str],
        attributes: dict | None = None,
        chunking: dict | None = None,
    ) -> dict:
        with self.trail.audited(app, "vector_stores.file_batches.create", store_id):
            data = self._data(app, "vector_stores")
            batch_id = stores_api.new_batch_id()
            stores_api.attach_files(
                data, store_id, file_ids, attributes, ChunkingStrategy.from_openai(chunking), batch_id
            )
            self._queue(app, store_id, file_ids)
            return stores_api.batch_object(data, store_id, batch_id)

    def get_batch(self, app: App, store_id: str, batch_id: str) -> dict:
        with self.trail.audited(app, "vector_stores.file_batches.get", f"{store_id}/{batch_id}"):
            return stores_api.batch_object(self._data(app, "vector_stores"), store_id, batch_id)

    def cancel_batch(self, app: App, store_id: str, batch_id: str) -> dict:
        with self.trail.audited(app, "vector_stores.file_batches.cancel", f"{store_id}/{batch_id}"):
            return stores_api.cancel_batch(self._data(app, "vector_stores"), store_id, batch_id)

    def _queue(self, app: App, store_id: str, file_ids: list[str]) -> list[Future | None]:
        ingestor = self._ingest()
        self._owner_names[app.identity] = app.name
        return [ingestor.submit(app.identity, store_id, f) for f in file_ids]

    def search_store(
        self, app: App, store_id: str, query: str, options: SearchOptions | None = None
    ) -> list[Hit]:
        """The store's best chunks for `query`; the query's embedding tokens are charged to the app
        (`tokens_in` of its audit row)."""
        started, spent = time.monotonic(), [0]
        try:
            hits = self._search(app, store_id, query, options or SearchOptions(), spent)
        except LLMasOSError as err:
            self.record(
                app.name, "vector_stores.search", store_id, err, duration_s=time.monotonic() - started
            )
            raise
        self.record(
            app.name,
            "vector_stores.search",
            store_id,
            duration_s=time.monotonic() - started,
            tokens_in=spent[0],
        )
        return hits

    def _search(
        self, app: App, store_id: str, query: str, options: SearchOptions, spent: list[int]
    ) -> list[Hit]:
        if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY_CHARS:
            raise InvalidRequestError(
                f"query must be a non-empty string of at most {MAX_QUERY_CHARS} characters"
            )
        data = self._data(app, "vector_stores")
        stores_api.get_store(data, store_id)  # 404 for an unknown store
        query = self._private_query(app, query)  # PrivacyCalls: the stored text's placeholders
        vector = None
        if options.mode != "bm25":
            embedder = self._embedder()
            if stores_api.embedding_model(data, store_id) not in (None, embedder.name):
                spent[0] += reindex_store(data, store_id, embedder)
                indexes.discard((data.owner, store_id))
            vectors, used = embedder.embed([query])
            spent[0] += used
            vector = np.asarray(vectors[0], dtype=np.float32)
        touch_store(data, store_id)
        hits = search(data, store_id, query, vector, options)
        return self._restored_hits(app, hits)  # PrivacyCalls

    # ---- key-value store ------------------------------------------------------------------------

    def kv_set(
        self, app: App, key: str, value: Any, ttl_s: float | None = None, *, idempotency_key: str = ""
    ) -> dict:
        """Store `value` under `key`; with `idempotency_key` (a workflow step's attempt), a second
        call of the same key writes nothing and answers what the first did."""
        with self.trail.audited(app, "kv.set", key[:64] if isinstance(key, str) else ""):
            data = self._data(app, "kv")
            private = self._private_value(app, value)  # PrivacyCalls
            stored = kv_api.kv_set(data, key, private, ttl_s, idempotency_key=idempotency_key)
            return {**stored, "value": self._restored_value(app, stored["value"])}

    def kv_get(self, app: App, key: str) -> dict:
        with self.trail.audited(app, "kv.get", key[:64] if isinstance(key, str) else ""):
            stored = kv_api.kv_get(self._data(app, "kv"), key)
            return {**stored, "value": self._restored_value(app, stored["value"])}

    def kv_delete(self, app: App, key: str, *, idempotency_key: str = "") -> dict:
        with self.trail.audited(app, "kv.delete", key[:64] if isinstance(key, str) else ""):
            return kv_api.kv_delete(self._data(app, "kv"), key, idempotency_key=idempotency_key)

    def kv_list(self, app: App, prefix: str = "", limit: int = 100, after: str | None = None) -> dict:
        with self.trail.audited(app, "kv.list", prefix[:64]):
            return kv_api.kv_list(self._data(app, "kv"), prefix, limit, after)

    # ---- quotas, usage, removal -----------------------------------------------------------------

    def data_usage(self, caller: App, name: str) -> dict:
        """An app's data usage and quota: its own, or any app's for an admin."""
        with self.trail.audited(caller, "data.usage", name):
            target = self._named_app(caller, name, "see other apps' data usage")
            data = app_data(target.identity)
            with data.db.transaction() as conn:
                return {"app": name, **usage(conn).to_dict()}

    def data_room(self, app: App) -> int | None:
        """Bytes left in the app's data quota: what an upload may take (not audited: the upload's
        own call is); None for an app that may not upload files (its call refuses it)."""
        if not app.allows("tool", "files"):
            return None
        with app_data(app.identity).db.transaction() as conn:
            used = usage(conn)
        return max(0, used.max_bytes - used.bytes)

    def set_data_quota(self, caller: App, name: str, max_bytes: int | None, max_items: int | None) -> dict:
        """Set an app's data quota (admin only); None restores a default."""
        with self.trail.audited(caller, "data.quota", name):
            if not caller.is_admin:
                raise PermissionDeniedError(
                    f"app {caller.name!r} may not set quotas; it needs the admin capability"
                )
            for label, value in (("max_bytes", max_bytes), ("max_items", max_items)):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                    raise InvalidRequestError(f"{label} must be an integer >= 0")
            target = self.apps.get(name)
            data = app_data(target.identity)
            with data.db.transaction() as conn:
                set_limits(conn, max_bytes, max_items)
                return {"app": name, **usage(conn).to_dict()}

    def delete_app_data(self, app: App) -> bool:
        """Remove all of an app's data (its removal calls this); whether it had any."""
        return delete_app_data(app.identity)

    def _named_app(self, caller: App, name: str, what: str) -> App:
        if name == caller.name:
            return caller
        if not caller.is_admin:
            raise PermissionDeniedError(f"app {caller.name!r} may not {what}; it needs the admin capability")
        return self.apps.get(name)
