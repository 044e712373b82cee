"""`llmasos docs ...` and `llmasos kv ...`: the calling app's documents and key-value store, through
the running server when there is one, else an in-process kernel (as the local admin app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from llmasos.errors import InvalidRequestError

docs_app = typer.Typer(help="Documents: vector stores with hybrid search.", no_args_is_help=True)
kv_app = typer.Typer(help="The key-value store: JSON values, optional time to live.", no_args_is_help=True)

Store = Annotated[str, typer.Option("--store", "-s", help="Store name or id (created on first add).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")]


def _client():
    from llmasos.sdk.client import Client

    return Client()


def _store_id(client, store: str, *, create: bool = False) -> str:
    for existing in client.docs.stores():
        if store in (existing["id"], existing["name"]):
            return existing["id"]
    if not create:
        raise InvalidRequestError(
            f"no vector store named {store!r}; add a file to it first (`llmasos docs add`)"
        )
    return client.docs.create_store(store)["id"]


@docs_app.command("add")
def add(
    files: Annotated[list[Path], typer.Argument(help="Files to index.")], store: Store = "default"
) -> None:
    """Upload files into a store and wait until each is indexed."""
    with _client() as client:
        store_id = _store_id(client, store, create=True)
        for path in files:
            added = client.docs.add(store_id, path)
            error = (added.get("last_error") or {}).get("message", "")
            typer.echo(f"{added['id']}  {path.name}  {added['status']}{'  ' + error if error else ''}")


@docs_app.command("ls")
def ls(store: Store = "default", json_: Json = False) -> None:
    """The store's files, with their status and indexing progress."""
    with _client() as client:
        listed = client.docs.list(_store_id(client, store))
    if json_:
        typer.echo(json.dumps(listed, indent=2))
        return
    for f in listed:
        progress = f.get("progress", {})
        done, total = progress.get("chunks_done", 0), progress.get("chunks_total", 0)
        typer.echo(f"{f['id']}  {f['status']}  {done}/{total} chunks")


@docs_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    store: Store = "default",
    max_results: Annotated[int, typer.Option("-k", help="How many results.")] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, bm25 or vector.")] = "hybrid",
    json_: Json = False,
) -> None:
    """The best passages, each with its source: file, chunk and character span."""
    with _client() as client:
        hits = client.docs.search(_store_id(client, store), query, max_results=max_results, mode=mode)
    if json_:
        typer.echo(json.dumps(hits, indent=2))
        return
    for hit in hits:
        start, end = hit["span"]
        typer.echo(
            f"{hit['score']:.3f}  {hit['filename']} #{hit['chunk']} [{start}:{end}]  {hit['text'][:200]}"
        )
    if not hits:
        typer.echo("nothing found", err=True)


@docs_app.command("rm")
def rm(file_id: Annotated[str, typer.Argument(help="The file's id (see `llmasos docs ls`).")]) -> None:
    """Delete a file with its chunks and vectors, from every store."""
    with _client() as client:
        client.docs.remove(file_id)
    typer.echo(f"removed {file_id}")


@kv_app.command("get")
def kv_get(key: str) -> None:
    """Print a key's value as JSON."""
    with _client() as client:
        typer.echo(json.dumps(client.kv.get(key)))


@kv_app.command("set")
def kv_set(
    key: str,
    value: Annotated[str, typer.Argument(help="A JSON value (a bare word is taken as a string).")],
    ttl: Annotated[float | None, typer.Option("--ttl", help="Seconds until it expires.")] = None,
) -> None:
    """Set a key to a JSON value."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    with _client() as client:
        client.kv.set(key, parsed, ttl_s=ttl)


@kv_app.command("rm")
def kv_rm(key: str) -> None:
    """Delete a key."""
    with _client() as client:
        client.kv.delete(key)


@kv_app.command("ls")
def kv_ls(
    prefix: Annotated[str, typer.Argument(help="Only keys that start with it.")] = "", json_: Json = False
) -> None:
    """The live keys, in order."""
    with _client() as client:
        keys = client.kv.list(prefix, limit=1000)
    typer.echo(json.dumps(keys) if json_ else "\n".join(keys))
