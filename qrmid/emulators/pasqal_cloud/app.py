"""The Starlette app: ``/oauth/token``, the ``/core-fast`` API, ``/account`` projects, result downloads and the
``/_emulator`` test hooks, wrapped in the fault-injection middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..faults import FaultMiddleware, Faults
from . import batches, catalog, control, jobs
from .auth import TokenIssuer, token_endpoint
from .config import EmulatorConfig
from .devices import catalogue
from .envelope import ApiError, error_body
from .runner import Runner
from .scheduler import Scheduler
from .store import Store


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_body(exc.status, exc.description)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_body(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_body(500, f"{type(exc).__name__}: {exc}")


class RequestCounter:
    """Counts the HTTP requests clients make (the ``/_emulator`` hooks aside) into ``store.requests``."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_emulator"):
            self.store.requests += 1
        await self.app(scope, receive, send)


def create_app(config: EmulatorConfig) -> ASGIApp:
    """The emulator as an ASGI app, wrapped in the fault-injection middleware."""
    runner = Runner(config.workers, config.max_exact_atoms)
    devices = catalogue(config.devices)
    scheduler = Scheduler(config, devices, runner)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            await scheduler.stop()
            await runner.close()

    app = Starlette(
        routes=[
            Route("/oauth/token", token_endpoint, methods=["POST"]),
            Mount("/core-fast", routes=[*batches.ROUTES, *jobs.ROUTES, *catalog.ROUTES]),
            Route("/account/api/v1/projects", catalog.projects, methods=["GET"]),
            Route("/results/{job_id}", jobs.download_result, methods=["GET"]),
            *control.ROUTES,
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.issuer = TokenIssuer(config)
    app.state.store = Store()
    app.state.devices = devices
    app.state.scheduler = scheduler
    app.state.faults = Faults()
    return RequestCounter(FaultMiddleware(app, app.state.faults, error_body), app.state.store)
