"""`client.docs` and `client.kv`: each app's documents (vector stores with hybrid search) and its
key-value store, the same over HTTP and in-process.

    store = client.docs.create_store("handbook")
    client.docs.add(store["id"], "handbook.pdf", attributes={"team": "hr"})   # waits until indexed
    for hit in client.docs.search(store["id"], "How many vacation days?"):
        print(hit["filename"], hit["span"], hit["text"])
    client.kv.set("last_run", {"ok": True}, ttl_s=3600); client.kv.get("last_run")
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from llmasos.data.pages import PageRequest
from llmasos.data.search import SearchOptions
from llmasos.errors import DataNotFoundError, LLMasOSError

_MISSING = object()
POLL_SECONDS = 0.2


class Docs:
    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def _local(self):
        return self._transport.data_calls() if self._transport.mode == "local" else None

    def create_store(self, name: str = "", metadata: dict | None = None) -> dict:
        if local := self._local():
            return local[0].create_store(local[1], name, metadata)
        return self._transport.request("POST", "/v1/vector_stores", json={"name": name, "metadata": metadata})

    def stores(self) -> list[dict]:
        if local := self._local():
            return local[0].list_stores(local[1], PageRequest(limit=100))["data"]
        return self._transport.request("GET", "/v1/vector_stores", params={"limit": 100})["data"]

    def delete_store(self, store_id: str) -> dict:
        if local := self._local():
            return local[0].delete_store(local[1], store_id)
        return self._transport.request("DELETE", f"/v1/vector_stores/{store_id}")

    def add(
        self,
        store_id: str,
        file: str | Path | bytes,
        *,
        filename: str | None = None,
        attributes: dict | None = None,
        wait: bool = True,
        timeout: float = 600.0,
    ) -> dict:
        """Upload a file (a path, or bytes with `filename`) into the store; with `wait`, return once
        it is indexed (status `completed`, or `failed` with `last_error`)."""
        if isinstance(file, bytes):
            if not filename:
                raise LLMasOSError("give filename= with bytes, e.g. filename='notes.md'")
            content = file
        else:
            content, filename = Path(file).read_bytes(), filename or Path(file).name
        if local := self._local():
            syscalls, app = local
            uploaded = syscalls.create_file(app, filename, content)
            attached = syscalls.attach_file(app, store_id, uploaded["id"], attributes)
        else:
            uploaded = self._transport.request(
                "POST", "/v1/files", files={"file": (filename, content)}, data={"purpose": "assistants"}
            )
            attached = self._transport.request(
                "POST",
                f"/v1/vector_stores/{store_id}/files",
                json={"file_id": uploaded["id"], "attributes": attributes},
            )
        deadline = time.monotonic() + timeout
        while wait and attached["status"] == "in_progress" and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            attached = self.get(store_id, uploaded["id"])
        return attached

    def get(self, store_id: str, file_id: str) -> dict:
        if local := self._local():
            return local[0].get_store_file(local[1], store_id, file_id)
        return self._transport.request("GET", f"/v1/vector_stores/{store_id}/files/{file_id}")

    def list(self, store_id: str) -> list[dict]:
        """The store's files with their status and progress (the first 100)."""
        if local := self._local():
            return local[0].list_store_files(local[1], store_id, PageRequest(limit=100))["data"]
        return self._transport.request("GET", f"/v1/vector_stores/{store_id}/files", params={"limit": 100})[
            "data"
        ]

    def remove(self, file_id: str) -> dict:
        """Delete a file with its chunks and vectors from every store."""
        if local := self._local():
            return local[0].delete_file(local[1], file_id)
        return self._transport.request("DELETE", f"/v1/files/{file_id}")

    def search(
        self,
        store_id: str,
        query: str,
        *,
        max_results: int = 10,
        mode: str = "hybrid",
        filters: dict | None = None,
        bm25_weight: float = 1.0,
        vector_weight: float = 1.0,
        explain: bool = False,
    ) -> list[dict]:
        """The best chunks, each with its citation (`file_id`, `filename`, `chunk`, `span`)."""
        fields = {
            "max_results": max_results,
            "mode": mode,
            "filters": filters,
            "bm25_weight": bm25_weight,
            "vector_weight": vector_weight,
            "explain": explain,
        }
        if local := self._local():
            hits = local[0].search_store(local[1], store_id, query, SearchOptions(**fields))
            return [h.cited(explain) for h in hits]
        body = {"query": query, **fields}
        return self._transport.request("POST", f"/os/vector_stores/{store_id}/search", json=body)["data"]


class KV:
    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def _local(self):
        return self._transport.data_calls() if self._transport.mode == "local" else None

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value of `key`; `default` if given and the key is absent, else DataNotFoundError."""
        try:
            if local := self._local():
                return local[0].kv_get(local[1], key)["value"]
            return self._transport.request("GET", f"/os/kv/{quote(key, safe='/')}")["value"]
        except DataNotFoundError:
            if default is _MISSING:
                raise
            return default

    def set(self, key: str, value: Any, *, ttl_s: float | None = None) -> None:
        if local := self._local():
            local[0].kv_set(local[1], key, value, ttl_s)
            return
        self._transport.request(
            "PUT", f"/os/kv/{quote(key, safe='/')}", json={"value": value, "ttl_s": ttl_s}
        )

    def delete(self, key: str) -> None:
        if local := self._local():
            local[0].kv_delete(local[1], key)
            return
        self._transport.request("DELETE", f"/os/kv/{quote(key, safe='/')}")

    def list(self, prefix: str = "", *, limit: int = 100) -> list[str]:
        if local := self._local():
            keys = local[0].kv_list(local[1], prefix, limit)["data"]
        else:
            keys = self._transport.request("GET", "/os/kv", params={"prefix": prefix, "limit": limit})["data"]
        return [k["key"] for k in keys]


def export_app(transport: Any, name: str, folder: str | Path) -> dict:
    """App `name`'s data written into `folder` (new or empty): JSON lines and original files; the
    manifest. Over HTTP the server's zip archive is unpacked there."""
    import io
    import zipfile

    folder = Path(folder)
    if transport.mode == "local":
        from llmasos.services.export import export_app as export_locally

        syscalls, app = transport.data_calls()
        return export_locally(syscalls, app, name, folder)
    if folder.exists() and any(folder.iterdir()):
        raise LLMasOSError(f"{folder} is not empty; export into a new or empty folder")
    archive = transport.request_bytes("GET", f"/os/apps/{quote(name, safe='')}/export")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(archive)) as unpacked:
        for member in unpacked.namelist():
            target = (folder / member).resolve()
            if not target.is_relative_to(folder.resolve()):  # a path that climbs out is not written
                raise LLMasOSError(f"the export holds a path outside its folder: {member!r}")
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            target.write_bytes(unpacked.read(member))
            target.chmod(0o600)
    return json.loads((folder / "manifest.json").read_text())
