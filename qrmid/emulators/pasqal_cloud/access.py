"""What every API handler shares: the bearer check, the app state and id lookups limited to the caller's projects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .auth import Principal
from .envelope import ApiError
from .store import Batch, Job, Store

Handler = Callable[[Request, Principal], Awaitable[Response]]


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Require a valid bearer token and pass the caller to the handler."""

    async def endpoint(request: Request) -> Response:
        principal = request.app.state.issuer.check(request)
        return await handler(request, principal)

    return endpoint


def state(request: Request) -> Any:
    """The app state: config, issuer, store, devices, scheduler."""
    return request.app.state


def find_batch(request: Request, principal: Principal) -> Batch:
    batch_id = request.path_params["batch_id"]
    try:
        store: Store = state(request).store
        return store.batch_for(batch_id, principal.projects)
    except KeyError:
        raise ApiError(404, f"Batch {batch_id} not found") from None


def find_job(request: Request, principal: Principal) -> Job:
    job_id = request.path_params["job_id"]
    try:
        store: Store = state(request).store
        return store.job_for(job_id, principal.projects)
    except KeyError:
        raise ApiError(404, f"Job {job_id} not found") from None


def render_batch(request: Request, batch: Batch, with_jobs: bool) -> dict[str, Any]:
    return batch.to_json(state(request).devices[batch.device_type].status, with_jobs)
