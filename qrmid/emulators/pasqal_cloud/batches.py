"""Batch routes: create (closed or open), read, status, add jobs, complete, cancel (one, bulk, jobs), rebatch, tags,
full results."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import authenticated, find_batch, render_batch, state
from .auth import Principal
from .devices import Device
from .envelope import ApiError, paginate, read_json, success
from .filters import batch_filter, job_filter
from .store import Batch, Job
from .validation import JobSpec, check_jobs, sequence_device_name

ORDER = {"created_at": lambda b: b.order, "updated_at": lambda b: (b.updated_at, b.order)}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _add_jobs(request: Request, batch: Batch, specs: list[JobSpec], parents: list[str | None]) -> None:
    jobs = [
        Job(batch.id, batch.project_id, spec.runs, spec.variables, spec.sequence, parent_id=parent)
        for spec, parent in zip(specs, parents, strict=True)
    ]
    batch.jobs.extend(jobs)
    state(request).store.add_jobs(batch, jobs)
    batch.last_added = time.monotonic()
    batch.touch()


def _new_batch(request: Request, batch: Batch, specs: list[JobSpec], parents: list[str | None]) -> None:
    app = state(request)
    app.store.add_batch(batch)
    _add_jobs(request, batch, specs, parents)
    app.scheduler.start(batch)


async def _target_device(request: Request, device_type: Any, sequence_builder: str | None, raw_jobs: Any) -> Device:
    """The requested device, or the one named by the sequence when ``device_type`` is absent."""
    if sequence_builder is not None:
        named = await asyncio.to_thread(sequence_device_name, sequence_builder)
    elif isinstance(raw_jobs, list) and raw_jobs and isinstance(raw_jobs[0], dict) and raw_jobs[0].get("sequence"):
        named = await asyncio.to_thread(sequence_device_name, raw_jobs[0]["sequence"])
    else:
        named = None
    chosen = device_type or named
    devices: dict[str, Device] = state(request).devices
    if chosen not in devices:
        raise ApiError(422, f"Unknown device type {chosen!r}; one of {sorted(devices)}")
    device = devices[chosen]
    if device.availability != "ACTIVE":
        raise ApiError(400, f"Device {chosen} is not available ({device.availability})")
    return device


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
    return success(render_batch(request, batch, with_jobs=True))


@authenticated
async def list_batches(request: Request, principal: Principal) -> Response:
    keep = batch_filter(request)
    batches = [b for b in state(request).store.batches.values() if b.project_id in principal.projects and keep(b)]
    return paginate(request, batches, ORDER, lambda b: render_batch(request, b, with_jobs=False))


@authenticated
async def get_batch(request: Request, principal: Principal) -> Response:
    return success(render_batch(request, find_batch(request, principal), with_jobs=False))


@authenticated
async def batch_status(request: Request, principal: Principal) -> Response:
    batch = find_batch(request, principal)
    return success({"id": batch.id, "status": batch.status, "jobs_count_per_status": batch.counts()})


@authenticated
async def add_jobs(request: Request, principal: Principal) -> Response:
    batch = find_batch(request, principal)
    if not batch.open:
        raise ApiError(400, f"Batch {batch.id} is not open: it accepts no new jobs")
    raw_jobs = await read_json(request)
    if not isinstance(raw_jobs, list) or not raw_jobs:
        raise ApiError(422, "Body must be a non-empty list of jobs")
    specs = await check_jobs(raw_jobs, batch.sequence_builder, state(request).devices[batch.device_type])
    if not batch.open:
        raise ApiError(400, f"Batch {batch.id} was closed while the jobs were checked")
    _add_jobs(request, batch, specs, [None] * len(specs))
    return success(render_batch(request, batch, with_jobs=True))


@authenticated
async def complete_batch(request: Request, principal: Principal) -> Response:
    batch = find_batch(request, principal)
    if batch.open:
        batch.open = False
        batch.touch()
    return success(render_batch(request, batch, with_jobs=True))


@authenticated
async def cancel_batch(request: Request, principal: Principal) -> Response:
    batch = find_batch(request, principal)
    if batch.finished:
        raise ApiError(400, f"Batch {batch.id} cannot be cancelled: its status is {batch.status}")
    state(request).scheduler.cancel(batch)
    return success(render_batch(request, batch, with_jobs=True))


@authenticated
async def cancel_batches(request: Request, principal: Principal) -> Response:
    body = await read_json(request)
    batch_ids = body.get("batch_ids") if isinstance(body, dict) else None
    if not isinstance(batch_ids, list) or not all(isinstance(i, str) and _is_uuid(i) for i in batch_ids):
        raise ApiError(422, "batch_ids must be a list of UUIDs")
    app = state(request)
    cancelled, errors = [], {}
    for batch_id in batch_ids:
        try:
            batch = app.store.batch_for(batch_id, principal.projects)
        except KeyError:
            errors[batch_id] = "Batch not found"
            continue
        if batch.finished:
            errors[batch_id] = f"Batch could not be cancelled: its status is {batch.status}"
            continue
        app.scheduler.cancel(batch)
        cancelled.append(render_batch(request, batch, with_jobs=False))
    return success({"batches": cancelled, "errors": errors})


@authenticated
async def cancel_batch_jobs(request: Request, principal: Principal) -> Response:
    batch = find_batch(request, principal)
    keep = job_filter(request, state(request).store.batches)
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
    source = find_batch(request, principal)
    keep = job_filter(request, state(request).store.batches)
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
    return success(render_batch(request, batch, with_jobs=True))


@authenticated
async def set_tags(request: Request, principal: Principal) -> Response:
    batch = find_batch(request, principal)
    body = await read_json(request)
    tags = body.get("tags") if isinstance(body, dict) else body
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ApiError(422, "tags must be a list of strings")
    batch.tags = tags
    batch.touch()
    return success(render_batch(request, batch, with_jobs=False))


@authenticated
async def full_results(request: Request, principal: Principal) -> Response:
    batch = find_batch(request, principal)
    return success({job.id: job.result for job in batch.jobs if job.result is not None})


ROUTES = [
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
]
