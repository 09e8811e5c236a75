"""Test hooks under ``/_emulator``: what each backend has seen, run-time backend changes, token expiry.

- ``GET /_emulator/record``: per backend, stored jobs now, the peak ever stored, admitted submissions
  (``{"id", "time"}``, so duplicates show), 429/423/409/503 rejections, deletes (a count, and ``deleted``:
  ``{"id", "time"}`` each), the admission order and the pub width check; plus the statuses of every
  ``POST /v1/jobs`` answer, injected faults included, and ``requests``: every API request counted by
  ``"METHOD /route STATUS"`` (e.g. ``"GET /v1/jobs/{id} 200"``).
- ``POST /_emulator/backends/{name}``: ``{"status", "locked", "message", "lanes", "job_duration_s",
  "admission_order", "pub_widths", "fail_next"}`` (all optional; ``lanes`` is an int for the HPC share or the
  ``/lanes`` object's numbers; ``admission_order`` is ``"duplicate-first"`` or ``"lanes-first"``; ``pub_widths`` is
  ``"strict"`` or ``"lenient"`` and applies to jobs that start after it; ``fail_next`` is
  ``{"count", "reason_code", "reason_message"}`` and fails the next jobs after admission).
- ``POST /_emulator/tokens/expire``: invalidate every issued bearer token.

Fault injection (``/_emulator/faults``) is served by the shared fault middleware.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import AdmissionOrder, BackendStatus, Lanes, PubWidths
from .errors import INVALID_REQUEST, ApiError
from .jobs import JobFailure, JobStore


class FailNext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(1, ge=1)
    reason_code: int = 5203
    reason_message: str = "Injected failure."


class BackendUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: BackendStatus | None = None
    locked: bool | None = None
    message: str | None = None
    lanes: Annotated[int, Field(ge=0)] | Lanes | None = None
    job_duration_s: float | None = Field(None, ge=0)
    admission_order: AdmissionOrder | None = None
    pub_widths: PubWidths | None = None
    fail_next: FailNext | None = None


async def record(request: Request) -> Response:
    store: JobStore = request.app.state.store
    return JSONResponse({"backends": store.record(), "submit_statuses": dict(request.app.state.submit_statuses),
                         "requests": dict(request.app.state.requests)})


async def update_backend(request: Request) -> Response:
    store: JobStore = request.app.state.store
    state = store.backend(request.path_params["name"])
    try:
        update = BackendUpdate.model_validate(await request.json())
    except (ValueError, ValidationError) as exc:
        raise ApiError(400, f"Invalid backend update: {exc}", INVALID_REQUEST) from None
    if update.status is not None:
        state.status = update.status
    if update.locked is not None:
        state.locked = update.locked
    if update.message is not None:
        state.message = update.message
    if isinstance(update.lanes, int):
        state.lanes = state.lanes.model_copy(update={"hpc_workload_manager": update.lanes})
    elif update.lanes is not None:
        state.lanes = update.lanes
    if update.job_duration_s is not None:
        state.job_duration_s = update.job_duration_s
    if update.admission_order is not None:
        state.admission_order = update.admission_order
    if update.pub_widths is not None:
        state.pub_widths = update.pub_widths
    if update.fail_next is not None:
        state.failures.append(JobFailure(**update.fail_next.model_dump()))
    body: dict[str, Any] = {**state.to_json(), "lanes": state.lanes.to_json(), "job_duration_s": state.job_duration_s,
                            "admission_order": state.admission_order, "pub_widths": state.pub_widths}
    return JSONResponse(body)


async def expire_tokens(request: Request) -> Response:
    return JSONResponse({"expired": request.app.state.tokens.expire_all()})


ROUTES = [
    Route("/_emulator/record", record, methods=["GET"]),
    Route("/_emulator/backends/{name}", update_backend, methods=["POST"]),
    Route("/_emulator/tokens/expire", expire_tokens, methods=["POST"]),
]
