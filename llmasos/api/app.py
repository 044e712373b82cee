"""The FastAPI application: one process, one kernel, every route a thin layer over its system calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from llmasos import __version__
from llmasos.api import metrics
from llmasos.api.auth import Admin
from llmasos.api.errors import install_error_handlers
from llmasos.api.ollama_routes import router as ollama_router
from llmasos.api.openai_routes import router as openai_router
from llmasos.api.os_routes import router as os_router
from llmasos.api.program_calls import close_program_pool
from llmasos.kernel.syscalls import Syscalls
from llmasos.library.store import ModelStore
from llmasos.programs import default_registry


def create_app(
    syscalls: Syscalls,
    *,
    allow_anonymous: bool = False,
    manage_kernel: bool = True,
    anonymous_app: str | None = None,
) -> FastAPI:
    """The HTTP API over `syscalls`. With `manage_kernel`, the app starts the kernel's thread when
    it starts serving and stops it on shutdown. With `anonymous_app`, requests without an LLMasOS
    key run as that app (see auth.keyless_app)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_kernel:
            syscalls.start()
        try:
            yield
        finally:
            close_program_pool(app)
            if manage_kernel:
                syscalls.stop()

    app = FastAPI(
        title="LLMasOS",
        version=__version__,
        description=(
            "An operating system for LLM applications: an OpenAI-compatible API and the OS endpoints. "
            "Every request carries `Authorization: Bearer <app key>`."
        ),
        lifespan=lifespan,
    )
    app.state.syscalls = syscalls
    app.state.store = ModelStore()
    app.state.allow_anonymous = allow_anonymous
    app.state.anonymous_app = anonymous_app
    app.state.metrics = metrics.registry_for(syscalls)
    default_registry()  # load the plugins now: a broken one is logged at start (and skipped)
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(os_router)
    app.include_router(ollama_router)

    @app.get("/metrics", tags=["os"], response_class=Response)
    def prometheus(request: Request, _: Admin) -> Response:
        """Prometheus metrics (admin key): per app and model, KV usage, resident models."""
        return Response(metrics.render(request.app.state.metrics), media_type=metrics.CONTENT_TYPE)

    return app
