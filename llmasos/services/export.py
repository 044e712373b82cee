"""Export of an app's data as files: what the kernel's `export_app_data` writes (files, stores,
chunks, conversations, responses, key-value data; `data/export.py`), plus the app's knowledge-graph
triples (`knowledge.jsonl`), which the `knowledge` tool keeps beside them. One folder, or one zip
archive of it for HTTP (`GET /os/apps/{name}/export`)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from llmasos.config import llmasos_home
from llmasos.data.export import write_json, write_jsonl
from llmasos.tools.knowledge import KnowledgeGraph

#: Triples exported at most (the tool's own queries take 50 at a time; a graph is far smaller).
MAX_TRIPLES = 1_000_000


def export_app(syscalls: Any, caller: Any, name: str, folder: Path) -> dict:
    """Write app `name`'s data into `folder` (the app itself, or an admin); the manifest."""
    manifest = syscalls.export_app_data(caller, name, folder)
    target = caller if name == caller.name else syscalls.apps.get(name)
    path = llmasos_home() / "knowledge.db"
    triples = KnowledgeGraph(path).query(target, limit=MAX_TRIPLES) if path.exists() else []
    manifest["counts"]["knowledge_triples"] = write_jsonl(Path(folder) / "knowledge.jsonl", triples)
    write_json(Path(folder) / "manifest.json", manifest)
    return manifest


def export_zip(syscalls: Any, caller: Any, name: str) -> bytes:
    """The export as a zip archive, its paths relative to the folder's root."""
    with tempfile.TemporaryDirectory(prefix="llmasos-export-") as scratch:
        folder = Path(scratch) / "export"
        export_app(syscalls, caller, name, folder)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())
        return buffer.getvalue()
