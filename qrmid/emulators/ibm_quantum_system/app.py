"""The HTTP surface: IAM token route, ``/version(s)``, ``/v1`` backend and job routes, and the test hooks."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..faults import FaultMiddleware, Faults
from . import control
from .auth import TokenStore, check_request, identity_token
from .config import EmulatorConfig
from .errors import INVALID_REQUEST, ApiError, error_body
from .jobs import BackendState, Job, JobStore
from .runner import LEVELS, Runner

PROGRAMS = ("sampler", "estimator")
STORAGE_KINDS = (("input", True), ("results", True), ("logs", False))

Handler = Callable[[Request], Awaitable[Response]]


def v1(handler: Handler) -> Handler:
    """Require a live bearer token (and check Service-CRN) before ``handler``."""

    async def endpoint(request: Request) -> Response:
        check_request(request)
        return await handler(request)

    return endpoint


def _store(request: Request) -> JobStore:
    return request.app.state.store


async def version(request: Request) -> Response:
    return JSONResponse({"version": "1.0.0"})


def _older(request: Request) -> bool:
    return bool(request.app.state.config.server != "current")


def _missing_route(status: int = 404) -> Response:
    """An older server's answer for a route it does not have: the web framework's own body, not the API's."""
    return JSONResponse({"detail": "Method Not Allowed" if status == 405 else "Not Found"}, status_code=status)


async def versions(request: Request) -> Response:
    if _older(request):
        return _missing_route()
    return JSONResponse({"versions": request.app.state.config.versions})


@v1
async def list_backends(request: Request) -> Response:
    return JSONResponse({"backends": [b.to_json() for b in _store(request).backends.values()]})


def _backend(request: Request) -> BackendState:
    return _store(request).backend(request.path_params["name"])


@v1
async def get_backend(request: Request) -> Response:
    return JSONResponse(_backend(request).to_json())


@v1
async def get_configuration(request: Request) -> Response:
    return JSONResponse(_backend(request).configuration)


@v1
async def get_properties(request: Request) -> Response:
    return JSONResponse(_backend(request).properties)


@v1
async def get_defaults(request: Request) -> Response:
    backend = _backend(request)
    raise ApiError(404, f"Pulse defaults are not available for backend {backend.name}.", value=backend.name)


@v1
async def get_lanes(request: Request) -> Response:
    if _older(request):
        return _missing_route()
    return JSONResponse(_backend(request).lanes.to_json())


def _invalid(message: str, field: str) -> ApiError:
    return ApiError(400, message, INVALID_REQUEST, target=(field, "field"))


def _text_field(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise _invalid(f"'{field}' is required: a string of 1 to 256 characters.", field)
    return value


def _storage(data: dict[str, Any]) -> dict[str, Any]:
    storage = data.get("storage")
    if not isinstance(storage, dict):
        raise _invalid("'storage' is required: an object with 'input', 'results' and optional 'logs'.", "storage")
    for kind, required in STORAGE_KINDS:
        entry = storage.get(kind)
        if entry is None and not required:
            continue
        field = f"storage.{kind}"
        if not isinstance(entry, dict):
            raise _invalid(f"'{field}' is required.", field)
        if entry.get("type") != "s3_compatible":
            raise _invalid(f"'{field}.type' {entry.get('type')!r} is not supported; use 's3_compatible'.", field)
        url = entry.get("presigned_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _invalid(f"'{field}.presigned_url' must be an http(s) URL.", field)
    return storage


async def _job_request(request: Request) -> Job:
    """Parse and validate a JobRequest body (413 when too large, 400 when invalid)."""
    body = await request.body()
    limit = request.app.state.config.max_request_bytes
    if len(body) > limit:
        raise ApiError(413, f"Request body of {len(body)} bytes exceeds the limit of {limit} bytes.")
    try:
        data = json.loads(body)
    except ValueError:
        raise _invalid("The request body is not valid JSON.", "body") from None
    if not isinstance(data, dict):
        raise _invalid("The request body must be a JSON object.", "body")
    job_id, backend = _text_field(data, "id"), _text_field(data, "backend")
    program_id = data.get("program_id")
    if program_id not in PROGRAMS:
        raise _invalid(f"'program_id' must be one of {', '.join(PROGRAMS)}.", "program_id")
    log_level = data.get("log_level", "warning")
    if log_level not in LEVELS:
        raise _invalid(f"'log_level' must be one of {', '.join(LEVELS)}.", "log_level")
    timeout = data.get("timeout_secs")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        raise _invalid("'timeout_secs' is required: an integer of at least 1.", "timeout_secs")
    return Job(job_id, backend, program_id, log_level, timeout, _storage(data))


@v1
async def create_job(request: Request) -> Response:
    job = await _job_request(request)
    _store(request).admit(job)
    request.app.state.runner.launch(job)
    return Response(status_code=204)


@v1
async def list_jobs(request: Request) -> Response:
    return JSONResponse({"jobs": [job.to_json() for job in _store(request).jobs.values()]})


async def get_job(request: Request) -> Response:
    server = request.app.state.config.server
    if server != "current":  # the route is missing, so no bearer check either
        return _missing_route(405 if server == "older-405" else 404)
    check_request(request)
    return JSONResponse(_store(request).job(request.path_params["job_id"]).to_json())


@v1
async def cancel_job(request: Request) -> Response:
    _store(request).cancel(request.path_params["job_id"])
    return Response(status_code=204)


@v1
async def delete_job(request: Request) -> Response:
    _store(request).delete(request.path_params["job_id"])
    return Response(status_code=204)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code < 400:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return ApiError(exc.status_code, str(exc.detail)).response()


ROUTES = [
    Route("/identity/token", identity_token, methods=["POST"]),
    Route("/version", version, methods=["GET"]),
    Route("/versions", versions, methods=["GET"]),
    Route("/v1/backends", list_backends, methods=["GET"]),
    Route("/v1/backends/{name}", get_backend, methods=["GET"]),
    Route("/v1/backends/{name}/configuration", get_configuration, methods=["GET"]),
    Route("/v1/backends/{name}/properties", get_properties, methods=["GET"]),
    Route("/v1/backends/{name}/defaults", get_defaults, methods=["GET"]),
    Route("/v1/backends/{name}/lanes", get_lanes, methods=["GET"]),
    Route("/v1/jobs", create_job, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}", delete_job, methods=["DELETE"]),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    *control.ROUTES,
]


class RequestCounter:
    """Counts every API request by ``METHOD /route STATUS`` (job ids and backend names replaced by ``{id}`` and
    ``{name}``), and the statuses of every ``POST /v1/jobs`` answer, injected faults included."""

    def __init__(self, app: ASGIApp, requests: Counter[str], submits: Counter[str]) -> None:
        self.app = app
        self.requests = requests
        self.submits = submits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            await self.app(scope, receive, send)
            return
        route = f"{scope['method']} {_route(scope['path'])}"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.requests[f"{route} {message['status']}"] += 1
                if route == "POST /v1/jobs":
                    self.submits[str(message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def _route(path: str) -> str:
    """``/v1/jobs/abc/cancel`` -> ``/v1/jobs/{id}/cancel``; ``/v1/backends/x/lanes`` -> ``/v1/backends/{name}/lanes``."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "v1" and parts[2] in ("jobs", "backends"):
        parts[3] = "{id}" if parts[2] == "jobs" else "{name}"
    return "/".join(parts)


def build_app(config: EmulatorConfig) -> ASGIApp:
    """The emulator as an ASGI app: Starlette routes behind failure injection."""
    store = JobStore([BackendState.load(backend) for backend in config.backends])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.runner = Runner(config, store)
        app.state.runner.warm()
        yield
        await app.state.runner.close()

    app = Starlette(
        routes=ROUTES,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.store = store
    app.state.tokens = TokenStore(config)
    app.state.submit_statuses = Counter()
    app.state.requests = Counter()
    return RequestCounter(FaultMiddleware(app, Faults(), error_body), app.state.requests, app.state.submit_statuses)
