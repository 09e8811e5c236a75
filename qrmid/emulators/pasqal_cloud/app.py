"""The Starlette app: ``/oauth/token``, the ``/core-fast`` API, ``/account`` projects and result downloads."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from ..faults import FaultMiddleware, Faults
from . import control
from .auth import Principal, TokenIssuer, token_endpoint
from .config import EmulatorConfig
from .devices import Device, catalogue
from .envelope import ApiError, error_body, paginate, read_json, success
from .filters import batch_filter, job_filter
from .runner import Runner
from .scheduler import Scheduler
from .store import Batch, Job, Store
from .validation import JobSpec, check_jobs, sequence_device_name

Handler = Callable[[Request, Principal], Awaitable[Response]]

BATCH_ORDER = {"created_at": lambda b: b.order, "updated_at": lambda b: (b.updated_at, b.order)}
JOB_ORDER = {
    "created_at": lambda j: j.order,
    "creation_order": lambda j: j.order,
    "updated_at": lambda j: (j.updated_at, j.order),
    "runs": lambda j: (j.runs, j.order),
}


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Require a valid bearer token and pass the caller to the handler."""

    async def endpoint(request: Request) -> Response:
        principal = request.app.state.issuer.check(request)
        return await handler(request, principal)

    return endpoint


def _state(request: Request) -> Any:
    return request.app.state


def _batch(request: Request, principal: Principal) -> Batch:
    batch_id = request.path_params["batch_id"]
    try:
        return _state(request).store.batch_for(batch_id, principal.projects)
    except KeyError:
        raise ApiError(404, f"Batch {batch_id} not found") from None


def _job(request: Request, principal: Principal) -> Job:
    job_id = request.path_params["job_id"]
    try:
        return _state(request).store.job_for(job_id, principal.projects)
    except KeyError:
        raise ApiError(404, f"Job {job_id} not found") from None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _render(request: Request, batch: Batch, with_jobs: bool) -> dict[str, Any]:
    return batch.to_json(_state(request).devices[batch.device_type].status, with_jobs)


def _add_jobs(request: Request, batch: Batch, specs: list[JobSpec], parents: list[str | None]) -> None:
    jobs = [
        Job(batch.id, batch.project_id, spec.runs, spec.variables, spec.sequence, parent_id=parent)
        for spec, parent in zip(specs, parents, strict=True)
    ]
    batch.jobs.extend(jobs)
    _state(request).store.add_jobs(batch, jobs)
    batch.last_added = time.monotonic()
    batch.touch()


def _new_batch(request: Request, batch: Batch, specs: list[JobSpec], parents: list[str | None]) -> None:
    state = _state(request)
    state.store.add_batch(batch)
    _add_jobs(request, batch, specs, parents)
    state.scheduler.start(batch)


# ---- batches ----


@authenticated
async def create_batch(request: Request, principal: Principal) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(422, "Body must be a JSON object")
    project_id = body.get("project_id")
    if not isinstance(project_id, str) or not project_id:
        raise ApiError(422, "project_id is required")
    if project_id not in principal.projects:
        raise ApiError(403, f"You are not a member of project {project_id}")
    sequence_builder = body.get("sequence_builder")
    if sequence_builder is not None and not isinstance(sequence_builder, str):
        raise ApiError(422, "sequence_builder must be a string (a serialised pulser sequence)")
    is_open = body["open"] if "open" in body else not body.get("complete", True)
    if not isinstance(is_open, bool):
        raise ApiError(422, "open must be a boolean")
    raw_jobs = body.get("jobs", [])
    if not is_open and not raw_jobs:
        raise ApiError(422, "A closed batch needs at least one job")
    device = await _target_device(request, body.get("device_type"), sequence_builder, raw_jobs)
    specs = await check_jobs(raw_jobs, sequence_builder, device)
    batch = Batch(
        project_id=project_id,
        user_id=principal.user_id,
        device_type=device.device_type,
        sequence_builder=sequence_builder,
        open=is_open,
        webhook=body.get("webhook"),
        configuration=body.get("configuration"),
        backend_configuration=body.get("backend_configuration"),
        tags=[str(tag) for tag in body.get("tags") or []],
    )
    _new_batch(request, batch, specs, [None] * len(specs))
    return success(_render(request, batch, with_jobs=True))


async def _target_device(request: Request, device_type: Any, sequence_builder: str | None, raw_jobs: Any) -> Device:
    """The requested device, or the one named by the sequence when ``device_type`` is absent."""
    if sequence_builder is not None:
        named = await asyncio.to_thread(sequence_device_name, sequence_builder)
    elif isinstance(raw_jobs, list) and raw_jobs and isinstance(raw_jobs[0], dict) and raw_jobs[0].get("sequence"):
        named = await asyncio.to_thread(sequence_device_name, raw_jobs[0]["sequence"])
    else:
        named = None
    chosen = device_type or named
    devices: dict[str, Device] = _state(request).devices
    if chosen not in devices:
        raise ApiError(422, f"Unknown device type {chosen!r}; one of {sorted(devices)}")
    device = devices[chosen]
    if device.availability != "ACTIVE":
        raise ApiError(400, f"Device {chosen} is not available ({device.availability})")
    return device


@authenticated
async def list_batches(request: Request, principal: Principal) -> Response:
    keep = batch_filter(request)
    batches = [b for b in _state(request).store.batches.values() if b.project_id in principal.projects and keep(b)]
    return paginate(request, batches, BATCH_ORDER, lambda b: _render(request, b, with_jobs=False))


@authenticated
async def get_batch(request: Request, principal: Principal) -> Response:
    return success(_render(request, _batch(request, principal), with_jobs=False))


@authenticated
async def batch_status(request: Request, principal: Principal) -> Response:
    batch = _batch(request, principal)
    return success({"id": batch.id, "status": batch.status, "jobs_count_per_status": batch.counts()})


@authenticated
async def add_jobs(request: Request, principal: Principal) -> Response:
    batch = _batch(request, principal)
    if not batch.open:
        raise ApiError(400, f"Batch {batch.id} is not open: it accepts no new jobs")
    raw_jobs = await read_json(request)
    if not isinstance(raw_jobs, list) or not raw_jobs:
        raise ApiError(422, "Body must be a non-empty list of jobs")
    specs = await check_jobs(raw_jobs, batch.sequence_builder, _state(request).devices[batch.device_type])
    if not batch.open:
        raise ApiError(400, f"Batch {batch.id} was closed while the jobs were checked")
    _add_jobs(request, batch, specs, [None] * len(specs))
    return success(_render(request, batch, with_jobs=True))


@authenticated
async def complete_batch(request: Request, principal: Principal) -> Response:
    batch = _batch(request, principal)
    if batch.open:
        batch.open = False
        batch.touch()
    return success(_render(request, batch, with_jobs=True))


@authenticated
async def cancel_batch(request: Request, principal: Principal) -> Response:
    batch = _batch(request, principal)
    if batch.finished:
        raise ApiError(400, f"Batch {batch.id} cannot be cancelled: its status is {batch.status}")
    _state(request).scheduler.cancel(batch)
    return success(_render(request, batch, with_jobs=True))


@authenticated
async def cancel_batches(request: Request, principal: Principal) -> Response:
    body = await read_json(request)
    batch_ids = body.get("batch_ids") if isinstance(body, dict) else None
    if not isinstance(batch_ids, list) or not all(isinstance(i, str) and _is_uuid(i) for i in batch_ids):
        raise ApiError(422, "batch_ids must be a list of UUIDs")
    state = _state(request)
    cancelled, errors = [], {}
    for batch_id in batch_ids:
        try:
            batch = state.store.batch_for(batch_id, principal.projects)
        except KeyError:
            errors[batch_id] = "Batch not found"
            continue
        if batch.finished:
            errors[batch_id] = f"Batch could not be cancelled: its status is {batch.status}"
            continue
        state.scheduler.cancel(batch)
        cancelled.append(_render(request, batch, with_jobs=False))
    return success({"batches": cancelled, "errors": errors})


@authenticated
async def cancel_batch_jobs(request: Request, principal: Principal) -> Response:
    batch = _batch(request, principal)
    keep = job_filter(request, _state(request).store.batches)
    cancelled, errors = [], {}
    for job in filter(keep, batch.jobs):
        if job.status in ("PENDING", "RUNNING"):
            job.move("CANCELED")
            cancelled.append(job.to_json())
        else:
            errors[job.id] = "Error could not be cancelled"
    batch.touch()
    return success({"jobs": cancelled, "errors": errors})


@authenticated
async def rebatch(request: Request, principal: Principal) -> Response:
    source = _batch(request, principal)
    keep = job_filter(request, _state(request).store.batches)
    chosen = [job for job in source.jobs if keep(job)]
    if not chosen:
        raise ApiError(400, f"No job of batch {source.id} matches the filters")
    batch = Batch(
        project_id=source.project_id,
        user_id=principal.user_id,
        device_type=source.device_type,
        sequence_builder=source.sequence_builder,
        open=False,
        webhook=source.webhook,
        configuration=source.configuration,
        backend_configuration=source.backend_configuration,
        tags=list(source.tags),
        parent_id=source.id,
    )
    specs = [JobSpec(job.runs, job.variables, job.sequence) for job in chosen]
    _new_batch(request, batch, specs, [job.id for job in chosen])
    return success(_render(request, batch, with_jobs=True))


@authenticated
async def set_tags(request: Request, principal: Principal) -> Response:
    batch = _batch(request, principal)
    body = await read_json(request)
    tags = body.get("tags") if isinstance(body, dict) else body
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ApiError(422, "tags must be a list of strings")
    batch.tags = tags
    batch.touch()
    return success(_render(request, batch, with_jobs=False))


@authenticated
async def full_results(request: Request, principal: Principal) -> Response:
    batch = _batch(request, principal)
    return success({job.id: job.result for job in batch.jobs if job.result is not None})


# ---- jobs ----


@authenticated
async def list_jobs(request: Request, principal: Principal) -> Response:
    store: Store = _state(request).store
    keep = job_filter(request, store.batches)
    jobs = [j for j in store.jobs.values() if j.project_id in principal.projects and keep(j)]
    return paginate(request, jobs, JOB_ORDER, lambda j: j.to_json())


@authenticated
async def get_job(request: Request, principal: Principal) -> Response:
    return success(_job(request, principal).to_json(with_sequence=True))


@authenticated
async def job_status(request: Request, principal: Principal) -> Response:
    job = _job(request, principal)
    return success({"id": job.id, "status": job.status})


@authenticated
async def cancel_job(request: Request, principal: Principal) -> Response:
    job = _job(request, principal)
    if job.status not in ("PENDING", "RUNNING"):
        raise ApiError(400, f"Job {job.id} cannot be cancelled: its status is {job.status}")
    job.move("CANCELED")
    _state(request).store.batches[job.batch_id].touch()
    return success(job.to_json())


@authenticated
async def results_link(request: Request, principal: Principal) -> Response:
    job = _job(request, principal)
    link = None
    if job.result is not None:
        link = f"{request.url.scheme}://{request.url.netloc}/results/{job.id}"
    return success({"results_link": link})


async def download_result(request: Request) -> Response:
    """The object behind a ``results_link``: plain JSON, no envelope, no auth."""
    job = _state(request).store.jobs.get(request.path_params["job_id"])
    if job is None or job.result is None:
        return JSONResponse({"error": "NoSuchKey"}, status_code=404)
    return JSONResponse(job.result)


# ---- devices and projects ----


async def list_devices_open(request: Request) -> Response:
    wanted = request.query_params.getlist("device_type")
    devices = _state(request).devices.values()
    return success([d.describe() for d in devices if not wanted or d.device_type in wanted])


@authenticated
async def list_devices(request: Request, principal: Principal) -> Response:
    def keep(device: Device) -> bool:
        described = device.describe()
        return all(
            not (wanted := request.query_params.getlist(name)) or str(described[name]) in wanted
            for name in ("device_type", "status", "availability")
        )

    return success([d.describe() for d in _state(request).devices.values() if keep(d)])


async def public_specs(request: Request) -> Response:
    return success([{"device_type": d.device_type, "specs": d.specs} for d in _state(request).devices.values()])


@authenticated
async def all_specs(request: Request, principal: Principal) -> Response:
    return success({d.device_type: d.specs for d in _state(request).devices.values()})


@authenticated
async def device_specs(request: Request, principal: Principal) -> Response:
    device_type = request.path_params["device_type"]
    device = _state(request).devices.get(device_type)
    if device is None:
        raise ApiError(404, f"Device type {device_type} not found")
    return success({"device_type": device.device_type, "specs": device.specs})


@authenticated
async def projects(request: Request, principal: Principal) -> Response:
    device_types = sorted(_state(request).devices)
    return success(
        [
            {
                "id": project,
                "project_id": project,
                "name": f"Project {project[:8]}",
                "project_status": "ACTIVE",
                "allowed_device_types": device_types,
                "queue_priority": "MEDIUM",
            }
            for project in principal.projects
        ]
    )


# ---- app ----


CORE_ROUTES = [
    Route("/api/v1/batches", create_batch, methods=["POST"]),
    Route("/api/v1/batches", list_batches, methods=["GET"]),
    Route("/api/v1/batches/cancel", cancel_batches, methods=["PATCH"]),
    Route("/api/v2/batches/cancel", cancel_batches, methods=["PATCH"]),
    Route("/api/v2/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/api/v1/batches/{batch_id}/status", batch_status, methods=["GET"]),
    Route("/api/v2/batches/{batch_id}/jobs", add_jobs, methods=["POST"]),
    Route("/api/v2/batches/{batch_id}/complete", complete_batch, methods=["PATCH"]),
    Route("/api/v2/batches/{batch_id}/cancel", cancel_batch, methods=["PATCH"]),
    Route("/api/v2/batches/{batch_id}/cancel/jobs", cancel_batch_jobs, methods=["PATCH"]),
    Route("/api/v1/batches/{batch_id}/rebatch", rebatch, methods=["POST"]),
    Route("/api/v1/batches/{batch_id}/tags", set_tags, methods=["PATCH"]),
    Route("/api/v1/batches/{batch_id}/full_results", full_results, methods=["GET"]),
    Route("/api/v2/jobs", list_jobs, methods=["GET"]),
    Route("/api/v2/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/status", job_status, methods=["GET"]),
    Route("/api/v2/jobs/{job_id}/cancel", cancel_job, methods=["PATCH"]),
    Route("/api/v1/jobs/{job_id}/results_link", results_link, methods=["GET"]),
    Route("/api/v1/devices", list_devices_open, methods=["GET"]),
    Route("/api/v2/devices", list_devices, methods=["GET"]),
    Route("/api/v1/devices/public-specs", public_specs, methods=["GET"]),
    Route("/api/v1/devices/specs", all_specs, methods=["GET"]),
    Route("/api/v1/devices/specs/{device_type}", device_specs, methods=["GET"]),
]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_body(exc.status, exc.description)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_body(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_body(500, f"{type(exc).__name__}: {exc}")


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
            Mount("/core-fast", routes=CORE_ROUTES),
            Route("/account/api/v1/projects", projects, methods=["GET"]),
            Route("/results/{job_id}", download_result, methods=["GET"]),
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
    return FaultMiddleware(app, app.state.faults, error_body)
