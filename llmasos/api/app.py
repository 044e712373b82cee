"""The FastAPI application: one process, one kernel, every route a thin layer over its system calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from llmasos import __version__
from llmasos.api import metrics
from llmasos.api.auth import (
    SWEEP_SECONDS,
    Admin,
    AuthenticationMiddleware,
    write_failure_summaries,
    write_refusal_summaries,
)
from llmasos.api.auth_guard import FailedAuthGuard
from llmasos.api.conversation_routes import router as conversation_router
from llmasos.api.cors import OllamaJsonBodyMiddleware, install_cors
from llmasos.api.data_routes import router as data_router
from llmasos.api.errors import OLLAMA_PREFIX, install_error_handlers
from llmasos.api.files_routes import router as files_router
from llmasos.api.kv_routes import router as kv_router
from llmasos.api.limits import LOOPBACK_HOSTS, HttpLimits, TrustedHostMiddleware, install_body_limit
from llmasos.api.model_routes import router as model_router
from llmasos.api.ollama_routes import router as ollama_router
from llmasos.api.openai_routes import router as openai_router
from llmasos.api.os_routes import router as os_router
from llmasos.api.privacy_routes import router as privacy_router
from llmasos.api.program_calls import close_program_pool
from llmasos.api.request_rate import RequestRateLimiter
from llmasos.api.responses_routes import router as responses_router
from llmasos.api.stats_routes import router as stats_router
from llmasos.api.thread_priority import yield_cpu_to_the_kernel
from llmasos.api.upload_quota import UploadQuotaMiddleware
from llmasos.api.vector_store_routes import router as vector_store_router
from llmasos.api.workflow_routes import router as workflow_router
from llmasos.console.routes import router as console_router
from llmasos.kernel.syscalls import Syscalls
from llmasos.library.store import ModelStore
from llmasos.programs import default_registry
from llmasos.services import summaries
from llmasos.tools.embed import load_embedder
from llmasos.workflows import RunStore, WorkflowRunner
from llmasos.workflows.calls import WorkflowCalls

logger = logging.getLogger(__name__)


def create_app(
    syscalls: Syscalls,
    *,
    allow_anonymous: bool = False,
    manage_kernel: bool = True,
    anonymous_app: str | None = None,
    limits: HttpLimits | None = None,
    http_niceness: int = 0,
) -> FastAPI:
    """The HTTP API over `syscalls`. With `manage_kernel`, the app starts the kernel's thread when
    it starts serving and stops it on shutdown. With `anonymous_app`, requests without an LLMasOS
    key run as that app (see auth.keyless_app). `limits` bound what one request may make it do.
    `http_niceness` > 0: the event loop's thread, and the threads it starts, run that many steps of
    niceness below the kernel's (`thread_priority.py`; `llmasos serve` sets it)."""
    limits = limits or HttpLimits()
    guard = FailedAuthGuard(limits.failed_auth)
    request_rate = RequestRateLimiter(limits.request_rate)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_kernel:
            syscalls.start()
            syscalls.resume_ingestion()  # files a stopped server left half-indexed
        yield_cpu_to_the_kernel(http_niceness)  # after the kernel's thread started: it keeps its own
        sweeper = asyncio.create_task(_sweep_failed_auth(guard, syscalls, request_rate))
        resumed = workflows.runner.resume_unfinished()  # runs a previous server left unfinished
        if resumed:
            logger.info("resumed %d unfinished workflow runs", len(resumed))
        try:
            yield
        finally:
            workflows.runner.close()  # unmarked: the next start resumes what is still running
            sweeper.cancel()
            close_program_pool(app)
            write_failure_summaries(guard, syscalls, everything=True)
            write_refusal_summaries(request_rate, syscalls, everything=True)
            summaries.cancel_running()  # conversation summaries in the background: asked again later
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
    syscalls.use_embedder(load_embedder, replace=False)  # embeds documents and search queries (llmasos.data)
    app.state.store = ModelStore()
    app.state.allow_anonymous = allow_anonymous
    app.state.anonymous_app = anonymous_app
    app.state.metrics = metrics.registry_for(syscalls)
    app.state.auth_guard = guard
    app.state.request_rate = request_rate
    default_registry()  # load the plugins now: a broken one is logged at start (and skipped)
    workflows = app.state.workflows = WorkflowCalls(WorkflowRunner(syscalls, RunStore(), default_registry()))
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(os_router)
    app.include_router(model_router)
    app.include_router(ollama_router)
    app.include_router(workflow_router)
    app.include_router(files_router)
    app.include_router(vector_store_router)
    app.include_router(kv_router)
    app.include_router(stats_router)
    app.include_router(data_router)
    app.include_router(privacy_router)
    app.include_router(console_router)
    app.include_router(responses_router)
    app.include_router(conversation_router)

    @app.get("/metrics", tags=["os"], response_class=Response)
    def prometheus(request: Request, _: Admin) -> Response:
        """Prometheus metrics (admin key): per app and model, KV usage, resident models."""
        return Response(metrics.render(request.app.state.metrics), media_type=metrics.CONTENT_TYPE)

    # Each middleware added wraps the ones before: the Host is checked first, then the key, then the
    # body's size, and only then does a route read the body.
    install_body_limit(app, limits.max_body_bytes)
    app.add_middleware(UploadQuotaMiddleware, syscalls=syscalls)  # uploads: the app's quota, as read
    app.add_middleware(OllamaJsonBodyMiddleware, prefix=OLLAMA_PREFIX)
    app.add_middleware(
        AuthenticationMiddleware,
        syscalls=syscalls,
        routes=app.router.routes,
        guard=guard,
        allow_anonymous=allow_anonymous,
        anonymous_app=anonymous_app,
        request_rate=request_rate,
    )
    keyless = allow_anonymous or anonymous_app is not None  # then a rebinding page could act as that app
    if keyless if limits.check_hosts is None else limits.check_hosts:
        app.add_middleware(TrustedHostMiddleware, hosts=(*LOOPBACK_HOSTS, *limits.trusted_hosts))
    install_cors(app, limits.cors_origins)  # outermost: a browser's preflight carries no key
    return app


async def _sweep_failed_auth(
    guard: FailedAuthGuard, syscalls: Syscalls, request_rate: RequestRateLimiter
) -> None:
    """Write the summary rows of failed-authentication and refused-request windows as they end."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            write_failure_summaries(guard, syscalls)
            write_refusal_summaries(request_rate, syscalls)
        except Exception:  # an audit write that fails must not end the sweeps
            logger.exception("writing failed-authentication summaries")
