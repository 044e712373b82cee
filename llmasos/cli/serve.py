"""`llmasos serve`: the HTTP server, owning the kernel."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmasos.settings import parse_size

__all__ = ["parse_size", "serve"]  # parse_size lived here first; it is llmasos.settings' now


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on; loopback by default (server.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="TCP port; 8080 (server.port).")] = None,
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
    log_level: Annotated[str | None, typer.Option(help="uvicorn log level; info (server.log_level).")] = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log", help="Log every request to $LLMASOS_HOME/logs/access.log (rotated at 10 MiB)."
        ),
    ] = False,
    max_body_size: Annotated[
        str | None, typer.Option("--max-body-size", help="Largest request body accepted; 8MiB by default.")
    ] = None,
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
    requests_per_minute: Annotated[
        int | None,
        typer.Option(
            "--requests-per-minute",
            min=0,
            help="Requests an app may start a minute unless it sets its own; 0: no limit (1200).",
        ),
    ] = None,
    keep_alive: Annotated[
        str | None,
        typer.Option("--keep-alive", help="How long an idle model stays loaded: 5m, 300, 0, -1 (forever)."),
    ] = None,
    context_length: Annotated[
        int | None, typer.Option("--context-length", help="Most tokens a sequence may take (engine).")
    ] = None,
    kv_cache_bytes: Annotated[
        str | None, typer.Option("--kv-cache-size", help="KV pool of each loaded model, e.g. 512MiB.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=0, help="Compute threads; 0: one per core.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Run models on Ray cluster nodes (`llmasos node start`): start a Ray head on loopback, "
            "or join --address.",
        ),
    ] = False,
    address: Annotated[
        str | None, typer.Option("--address", help="With --cluster: an existing Ray head, HOST:PORT.")
    ] = None,
    cluster_port: Annotated[
        int, typer.Option("--cluster-port", min=1, max=65535, help="With --cluster: the Ray head's port.")
    ] = 6380,
) -> None:
    """Run the HTTP server (OpenAI-compatible API + OS endpoints) until interrupted.

    Every option also has a key in $LLMASOS_HOME/config.toml and an LLMASOS_* variable; a flag wins
    over both (`llmasos config show` prints what is in force and where it came from)."""
    from llmasos.api.server import serve as run_server
    from llmasos.settings import load_settings

    effective = load_settings(
        serve_flags(
            host=host,
            port=port,
            memory_budget=memory_budget,
            allow_anonymous=allow_anonymous,
            anonymous_app=anonymous_app,
            log_level=log_level,
            access_log=access_log,
            max_body_size=max_body_size,
            trusted_host=trusted_host,
            cors_origin=cors_origin,
            requests_per_minute=requests_per_minute,
            keep_alive=keep_alive,
            context_length=context_length,
            kv_cache_bytes=kv_cache_bytes,
            threads=threads,
            device=device,
        )
    )
    if address is not None and not cluster:
        raise typer.BadParameter("--address joins a cluster: use it with --cluster", param_hint="--address")
    from llmasos.api.server import ClusterOptions

    options = ClusterOptions(address, port=cluster_port) if cluster else None
    run_server(settings=effective.settings, preload=tuple(preload or ()), cluster=options)


#: Each flag of `serve` and the setting it overrides.
FLAG_KEYS = {
    "host": ("server.host", "--host"),
    "port": ("server.port", "--port"),
    "allow_anonymous": ("server.allow_anonymous", "--allow-anonymous"),
    "anonymous_app": ("server.anonymous_app", "--anonymous-app"),
    "log_level": ("server.log_level", "--log-level"),
    "access_log": ("server.access_log", "--access-log"),
    "max_body_size": ("server.max_body_size", "--max-body-size"),
    "trusted_host": ("server.trusted_hosts", "--trusted-host"),
    "cors_origin": ("server.cors_origins", "--cors-origin"),
    "requests_per_minute": ("server.requests_per_minute", "--requests-per-minute"),
    "memory_budget": ("models.memory_budget", "--memory-budget"),
    "keep_alive": ("models.keep_alive", "--keep-alive"),
    "context_length": ("engine.context_length", "--context-length"),
    "kv_cache_bytes": ("engine.kv_cache_bytes", "--kv-cache-size"),
    "threads": ("engine.threads", "--threads"),
    "device": ("engine.device", "--device"),
}


def serve_flags(**given: Any) -> dict[str, tuple[Any, str]]:
    """The flags given, as `load_settings` takes them. An on-only flag that is off, or a repeatable
    one never given, was not given: the file or the environment decide."""
    flags = {}
    for name, value in given.items():
        if value is False or value == [] or value is None:
            continue
        key, flag = FLAG_KEYS[name]
        flags[key] = (tuple(value) if isinstance(value, list) else value, flag)
    return flags
