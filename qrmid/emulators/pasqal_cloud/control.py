"""Test hooks under ``/_emulator``: the record, device switches, token expiry and timing settings.

(``/_emulator/faults`` is served by the fault middleware itself.)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import Timings
from .scheduler import DeviceLoad


def _record(request: Request) -> dict[str, Any]:
    state = request.app.state
    store = state.store
    devices = state.devices
    return {
        "batches": [
            {
                "id": batch.id,
                "device_type": batch.device_type,
                "open": batch.open,
                "status": batch.status,
                "job_count": len(batch.jobs),
                "created_at": batch.created_at,
                "started_at": batch.start_datetime,
                "ended_at": batch.end_datetime,
            }
            for batch in sorted(store.batches.values(), key=lambda b: b.order)
        ],
        "jobs": [
            {
                "id": job.id,
                "batch_id": job.batch_id,
                "runs": job.runs,
                "status": job.status,
                "fingerprint": store.fingerprints[job.id],
                "created_at": job.created_at,
                "started_at": job.start_timestamp,
                "ended_at": job.end_timestamp,
            }
            for job in sorted(store.jobs.values(), key=lambda j: j.order)
        ],
        "devices": {
            name: {
                "status": device.status,
                "availability": device.availability,
                "max_batches_at_once": device.max_active,
                "max_unfinished_batches": state.scheduler.load.get(name, DeviceLoad()).max_unfinished,
                "queued_batches": list(device.queue),
            }
            for name, device in devices.items()
        },
        "requests": store.requests,
        "max_qpu_batches_at_once": max((d.max_active for d in devices.values() if d.is_qpu), default=0),
        "token_grants": [
            {
                "grant_type": grant.grant_type,
                "subject": grant.subject,
                "issued_at": grant.issued_at,
                "expires_at": grant.expires_at,
            }
            for grant in state.issuer.grants
        ],
    }


async def record(request: Request) -> Response:
    """``GET /_emulator/record``: what clients did (batches, jobs, device load, token grants, requests made)."""
    return JSONResponse(_record(request))


async def set_device(request: Request) -> Response:
    """``POST /_emulator/devices/{type}`` with ``status``, ``availability`` and/or ``error_jobs``."""
    device = request.app.state.devices.get(request.path_params["device_type"])
    if device is None:
        return JSONResponse({"error": "unknown device type"}, status_code=404)
    try:
        await device.update(await request.json())
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return JSONResponse(device.describe() | {"error_jobs": device.error_jobs})


async def expire_tokens(request: Request) -> Response:
    """``POST /_emulator/tokens/expire``: every token issued so far is rejected from now on."""
    return JSONResponse({"expired": request.app.state.issuer.expire_all()})


async def settings(request: Request) -> Response:
    """``POST /_emulator/settings`` with any of the timing keys of ``config.Timings``."""
    config = request.app.state.config
    current = Timings.model_validate({name: getattr(config, name) for name in Timings.model_fields})
    try:
        updated = Timings.model_validate(current.model_dump() | await request.json())
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        return JSONResponse({"error": str(exc)}, status_code=422)
    for name, value in updated.model_dump().items():
        setattr(config, name, value)
    return JSONResponse(updated.model_dump())


ROUTES = [
    Route("/_emulator/record", record, methods=["GET"]),
    Route("/_emulator/devices/{device_type}", set_device, methods=["POST"]),
    Route("/_emulator/tokens/expire", expire_tokens, methods=["POST"]),
    Route("/_emulator/settings", settings, methods=["POST"]),
]
