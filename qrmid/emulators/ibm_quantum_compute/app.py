"""The ASGI app: IAM token exchange, ``/api/v1`` backends and jobs, and a ``/_emulator/record`` hook for tests."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from qrmid.backends import qiskit_jobs
from qrmid.backends.base import InvalidPayload

LIMITS = qiskit_jobs.Limits(max_qubits=30, max_shots=10**6)


@dataclass(frozen=True)
class Settings:
    """What the emulator accepts and serves."""

    api_key: str
    crn: str
    backends: tuple[str, ...]
    job_seconds: float = 0.2


@dataclass
class Job:
    """One job and what it produced."""

    id: str
    backend: str
    program_id: str
    params: dict[str, Any]
    session_id: str | None
    created: str
    cost: int
    status: str = "Queued"
    reason: str = ""
    results: bytes = b""
    logs: str = ""
    runner: asyncio.Task[None] | None = None

    def view(self) -> dict[str, Any]:
        state: dict[str, Any] = {"status": self.status}
        if self.reason:
            state["reason"] = self.reason
        return {"id": self.id, "backend": self.backend, "status": self.status, "state": state,
                "program": {"id": self.program_id}, "created": self.created, "session_id": self.session_id,
                "private": False, "tags": [], "user_id": "emulator", "cost": self.cost}


@dataclass
class Service:
    """The emulator's state: tokens, jobs, and a record of the calls tests look at."""

    settings: Settings
    tokens: set[str] = field(default_factory=set)
    jobs: dict[str, Job] = field(default_factory=dict)
    record: dict[str, int] = field(default_factory=lambda: {"tokens": 0, "submissions": 0, "cancels": 0})
    job_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.job_seconds = self.settings.job_seconds

    async def run(self, job: Job) -> None:
        """Queued, then running, then the primitive on qiskit-aer; cancellation stops it at any point."""
        await asyncio.sleep(self.job_seconds / 2)
        job.status = "Running"
        await asyncio.sleep(self.job_seconds / 2)
        try:
            results, logs = await asyncio.to_thread(qiskit_jobs.run, job.program_id, json.dumps(job.params),
                                                    LIMITS, 1234)
        except InvalidPayload as exc:
            job.status, job.reason, job.logs = "Failed", f"Error in input: {exc}", f"job failed: {exc}\n"
            return
        job.status, job.results, job.logs = "Completed", results, logs


def _error(status: int, message: str, code: int = 0) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code or status * 10, "message": message, "more_info": ""}],
                         "trace": uuid.uuid4().hex}, status)


class Refused(Exception):
    """A request the service refuses; answered with its error body by the app's exception handler."""

    def __init__(self, status: int, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.response = _error(status, message, code)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return exc.response


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _authorize(request: Request) -> None:
    service = _service(request)
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    if token not in service.tokens:
        raise Refused(401, "Invalid or expired token", 1001)
    if request.headers.get("service-crn") != service.settings.crn:
        raise Refused(403, "Service-CRN does not name an instance this token may use", 1003)


async def token(request: Request) -> Response:
    service = _service(request)
    form = parse_qs((await request.body()).decode())
    if form.get("apikey") != [service.settings.api_key]:
        return JSONResponse({"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found."}, 400)
    issued = secrets.token_urlsafe(24)
    service.tokens.add(issued)
    service.record["tokens"] += 1
    now = int(time.time())
    return JSONResponse({"access_token": issued, "refresh_token": "not_supported", "token_type": "Bearer",
                         "expires_in": 3600, "expiration": now + 3600, "scope": "ibm_openid"})


def _backend(request: Request) -> str:
    name = request.path_params["name"]
    if name not in _service(request).settings.backends:
        raise Refused(404, f"backend {name} not found", 1216)
    return str(name)


async def backends(request: Request) -> Response:
    _authorize(request)
    service = _service(request)
    devices = [{"name": name, "status": {"name": "online", "reason": "available"}, "is_simulator": False,
                "qubits": _configuration(name)["n_qubits"], "queue_length": _pending(service, name),
                "processor_type": {"family": "Falcon", "revision": "5.11"}} for name in service.settings.backends]
    return JSONResponse({"devices": devices})


async def backend_status(request: Request) -> Response:
    _authorize(request)
    name = _backend(request)
    return JSONResponse({"state": True, "status": "online", "message": "available", "backend_version": "1.0.0",
                         "length_queue": _pending(_service(request), name)})


async def configuration(request: Request) -> Response:
    _authorize(request)
    return JSONResponse(_configuration(_backend(request)))


async def properties(request: Request) -> Response:
    _authorize(request)
    return JSONResponse(_properties(_backend(request)))


async def create_job(request: Request) -> Response:
    _authorize(request)
    service = _service(request)
    body = await request.json()
    if body.get("backend") not in service.settings.backends:
        return _error(404, f"backend {body.get('backend')} not found", 1216)
    if body.get("program_id") not in ("sampler", "estimator"):
        return _error(400, f"program {body.get('program_id')} is not supported here", 1112)
    job = Job(id=f"d{uuid.uuid4().hex[:19]}", backend=body["backend"], program_id=body["program_id"],
              params=body.get("params") or {}, session_id=body.get("session_id"), cost=int(body.get("cost") or 0),
              created=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    service.jobs[job.id] = job
    service.record["submissions"] += 1
    job.runner = asyncio.create_task(service.run(job))
    return JSONResponse({"id": job.id, "backend": job.backend}, 200)


def _job(request: Request) -> Job:
    job = _service(request).jobs.get(request.path_params["id"])
    if job is None:
        raise Refused(404, f"job {request.path_params['id']} not found", 1291)
    return job


async def get_job(request: Request) -> Response:
    _authorize(request)
    return JSONResponse(_job(request).view())


async def list_jobs(request: Request) -> Response:
    _authorize(request)
    jobs = list(_service(request).jobs.values())
    if backend := request.query_params.get("backend"):
        jobs = [job for job in jobs if job.backend == backend]
    if request.query_params.get("pending") == "true":
        jobs = [job for job in jobs if job.status in ("Queued", "Running")]
    return JSONResponse({"jobs": [job.view() for job in jobs], "count": len(jobs), "limit": 200, "offset": 0})


async def results(request: Request) -> Response:
    _authorize(request)
    job = _job(request)
    if job.status != "Completed":
        return _error(404, f"job {job.id} has no results: it is {job.status}: {job.reason}".rstrip(": "), 1295)
    return Response(job.results, media_type="text/plain")  # QRMI's client takes the body as text


async def logs(request: Request) -> Response:
    _authorize(request)
    return PlainTextResponse(_job(request).logs)


async def cancel(request: Request) -> Response:
    _authorize(request)
    job = _job(request)
    if job.status not in ("Queued", "Running"):
        return _error(409, f"job {job.id} is {job.status}: it cannot be cancelled", 1211)
    if job.runner is not None:
        job.runner.cancel()
    job.status, job.reason = "Cancelled", "cancelled by the user"
    _service(request).record["cancels"] += 1
    return Response(status_code=204)


async def record(request: Request) -> Response:
    service = _service(request)
    jobs = {job.id: job.status for job in service.jobs.values()}
    return JSONResponse({**service.record, "jobs": jobs})


async def change(request: Request) -> Response:
    """Test hook: ``{"job_seconds": S}`` sets how long the next jobs take."""
    service = _service(request)
    service.job_seconds = float((await request.json())["job_seconds"])
    return JSONResponse({"job_seconds": service.job_seconds})


def _pending(service: Service, backend: str) -> int:
    return sum(job.backend == backend and job.status in ("Queued", "Running") for job in service.jobs.values())


@lru_cache
def _device_files() -> tuple[dict[str, Any], dict[str, Any]]:
    from qiskit_ibm_runtime.fake_provider import FakePerth

    fake = FakePerth()
    folder = Path(fake.dirname)
    return json.loads((folder / fake.conf_filename).read_text()), json.loads((folder / fake.props_filename).read_text())


def _configuration(name: str) -> dict[str, Any]:
    return {**_device_files()[0], "backend_name": name}


def _properties(name: str) -> dict[str, Any]:
    return {**_device_files()[1], "backend_name": name}


def build_app(settings: Settings) -> Starlette:
    """The emulator serving ``settings``."""
    routes = [
        Route("/identity/token", token, methods=["POST"]),
        Route("/api/v1/backends", backends),
        Route("/api/v1/backends/{name}/status", backend_status),
        Route("/api/v1/backends/{name}/configuration", configuration),
        Route("/api/v1/backends/{name}/properties", properties),
        Route("/api/v1/jobs", create_job, methods=["POST"]),
        Route("/api/v1/jobs", list_jobs, methods=["GET"]),
        Route("/api/v1/jobs/{id}", get_job),
        Route("/api/v1/jobs/{id}/results", results),
        Route("/api/v1/jobs/{id}/logs", logs),
        Route("/api/v1/jobs/{id}/cancel", cancel, methods=["POST"]),
        Route("/_emulator/record", record),
        Route("/_emulator/settings", change, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={Refused: _refused})
    app.state.service = Service(settings)
    return app
