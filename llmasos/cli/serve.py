"""`llmasos serve`: the HTTP server, owning the kernel."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from llmasos.errors import InvalidRequestError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str, what: str = "memory size") -> int:
    """'2GiB' -> 2147483648, '1.5G' -> 1500000000, '512MiB', '1000000' (bytes)."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower().removesuffix("b") if match else None
    if match is None or unit not in _UNITS:
        raise InvalidRequestError(f"{what} {text!r} is not valid; write it like 2GiB, 1.5G, 512MiB or bytes")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise InvalidRequestError(f"{what} {text!r} must be more than zero")
    return size


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            "--memory-budget", help="Memory for models (weights + KV), e.g. 4GiB. Default: 80% of free."
        ),
    ] = None,
    preload: Annotated[
        list[str] | None, typer.Option("--preload", help="Load this model at start (repeatable).")
    ] = None,
    allow_anonymous: Annotated[
        bool, typer.Option("--allow-anonymous", help="Serve requests without a key as a 'batch' app.")
    ] = False,
    anonymous_app: Annotated[
        str | None,
        typer.Option(
            "--anonymous-app",
            help="Serve requests without an LLMasOS key (none, or a placeholder as Ollama clients send) "
            "as this app, with its priority, quotas and capabilities.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log", help="Log every request to $LLMASOS_HOME/logs/access.log (rotated at 10 MiB)."
        ),
    ] = False,
    max_body_size: Annotated[
        str, typer.Option("--max-body-size", help="Largest request body accepted, e.g. 8MiB.")
    ] = "8MiB",
    trusted_host: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-host",
            help="A Host name keyless requests may use besides loopback (repeatable; see --allow-anonymous).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Let web pages from this origin (e.g. http://localhost:3000, or * for all) call the API "
            "from a browser (repeatable; off by default).",
        ),
    ] = None,
) -> None:
    """Run the HTTP server (OpenAI-compatible API + OS endpoints) until interrupted."""
    from llmasos.api.cors import check_origins
    from llmasos.api.limits import HttpLimits
    from llmasos.api.server import serve as run_server

    run_server(
        host,
        port,
        memory_budget=parse_size(memory_budget) if memory_budget else None,
        allow_anonymous=allow_anonymous,
        anonymous_app=anonymous_app,
        preload=tuple(preload or ()),
        log_level=log_level,
        access_log=access_log,
        limits=HttpLimits(
            max_body_bytes=parse_size(max_body_size, "body size"),
            trusted_hosts=tuple(trusted_host or ()),
            cors_origins=check_origins(cors_origin or ()),
        ),
    )
