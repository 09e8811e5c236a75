"""Job store: backends' run-time state, admission on execution lanes, and the job state machine.

A job is ``Running`` from admission until it ends ``Completed``, ``Failed`` or ``Cancelled``; it stays stored, and
holds its lane, until it is DELETEd. Admission counts every stored job of the backend, terminal ones included,
and checks for a duplicate id before or after counting, as the backend's ``admission_order`` says.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import LANES_FIRST, AdmissionOrder, BackendConfig, Lanes, PubWidths
from .errors import (
    BACKEND_NOT_FOUND,
    DUPLICATE_JOB,
    JOB_NOT_FOUND,
    LANES_FULL,
    NOT_CANCELLABLE,
    NOT_DELETABLE,
    RESERVED,
    ApiError,
)

RUNNING, COMPLETED, FAILED, CANCELLED = "Running", "Completed", "Failed", "Cancelled"


def rfc3339(moment: datetime) -> str:
    """``2024-11-05T17:21:58.011168Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class JobFailure:
    """An injected failure for the next jobs of a backend."""

    count: int
    reason_code: int = 5203
    reason_message: str = "Injected failure."


@dataclass
class Job:
    """One primitive run, as stored by the service."""

    id: str
    backend: str
    program_id: str
    log_level: str
    timeout_secs: int
    storage: dict[str, Any]
    created_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: str = RUNNING
    end_time: datetime | None = None
    reason_code: int | None = None
    reason_message: str | None = None
    reason_solution: str | None = None
    quantum_nanoseconds: int | None = None
    task: asyncio.Task | None = None

    def finish(self, status: str, **details: Any) -> bool:
        """Move a ``Running`` job to a terminal ``status``; False if it already ended."""
        if self.status != RUNNING:
            return False
        self.status = status
        self.end_time = datetime.now(UTC)
        for key, value in details.items():
            setattr(self, key, value)
        return True

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "backend": self.backend,
            "program_id": self.program_id,
            "status": self.status,
            "log_level": self.log_level,
            "created_time": rfc3339(self.created_time),
            "timeout_secs": self.timeout_secs,
            "storage": self.storage,
        }
        if self.end_time is not None:
            body["end_time"] = rfc3339(self.end_time)
        for key in ("reason_code", "reason_message", "reason_solution"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.quantum_nanoseconds is not None:
            body["usage"] = {"quantum_nanoseconds": self.quantum_nanoseconds}
        return body


@dataclass
class Record:
    """What a backend has seen, for tests: admissions, rejections, deletes and peak lane use."""

    max_stored: int = 0
    submissions: list[dict[str, Any]] = field(default_factory=list)
    rejected_lanes: int = 0
    rejected_locked: int = 0
    rejected_duplicate: int = 0
    rejected_inactive: int = 0
    deletes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BackendState:
    """A configured backend with its run-time settings (changed through the control routes)."""

    config: BackendConfig
    files: tuple[Path, Path]
    configuration: dict[str, Any]
    properties: dict[str, Any]
    status: str
    message: str
    locked: bool
    lanes: Lanes
    job_duration_s: float
    admission_order: AdmissionOrder
    pub_widths: PubWidths
    failures: list[JobFailure] = field(default_factory=list)
    record: Record = field(default_factory=Record)

    @classmethod
    def load(cls, config: BackendConfig) -> BackendState:
        """Read the device's configuration and properties, renamed to the backend's name."""
        conf_path, props_path = config.device_files()
        configuration = json.loads(conf_path.read_text())
        properties = json.loads(props_path.read_text())
        configuration["backend_name"] = properties["backend_name"] = config.name
        return cls(
            config=config,
            files=(conf_path, props_path),
            configuration=configuration,
            properties=properties,
            status=config.status,
            message=config.message,
            locked=config.locked,
            lanes=config.lanes.model_copy(),
            job_duration_s=config.job_duration_s,
            admission_order=config.admission_order,
            pub_widths=config.pub_widths,
        )

    @property
    def name(self) -> str:
        return self.config.name

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "version": self.configuration.get("backend_version", "1.0.0"),
        }
        if self.status == "online":
            body["locked"] = self.locked
        return body

    def take_failure(self) -> JobFailure | None:
        """The injected failure the next job gets, if any."""
        if not self.failures:
            return None
        failure = self.failures[0]
        failure.count -= 1
        if failure.count <= 0:
            self.failures.pop(0)
        return failure


class JobStore:
    """All stored jobs (in creation order) and the backends they run on."""

    def __init__(self, backends: list[BackendState]) -> None:
        self.backends = {b.name: b for b in backends}
        self.jobs: dict[str, Job] = {}

    def backend(self, name: str) -> BackendState:
        try:
            return self.backends[name]
        except KeyError:
            raise ApiError(
                404, f"Backend {name} not found.", BACKEND_NOT_FOUND, value=name, target=("backend_name", "parameter")
            ) from None

    def job(self, job_id: str) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise ApiError(
                404, f"Job not found. Job ID: {job_id}.", JOB_NOT_FOUND, value=job_id, target=("job_id", "parameter")
            ) from None

    def stored(self, backend: str) -> int:
        return sum(1 for job in self.jobs.values() if job.backend == backend)

    def admit(self, job: Job) -> None:
        """Store ``job`` as Running, or raise the first admission error in the backend's ``admission_order``:
        whether a duplicate id is found before the lanes are counted (409 over 429) or after (429 over 409)."""
        state = self.backend(job.backend)
        if state.status != "online":
            state.record.rejected_inactive += 1
            raise ApiError(503, f"service inactive: backend {state.name} is {state.status}.", value=state.name)
        if state.admission_order == LANES_FIRST:
            self._check_lanes(state)
            self._check_duplicate(state, job)
            self._check_locked(state)
        else:
            self._check_duplicate(state, job)
            self._check_locked(state)
            self._check_lanes(state)
        stored = self.stored(state.name)
        self.jobs[job.id] = job
        state.record.max_stored = max(state.record.max_stored, stored + 1)
        state.record.submissions.append({"id": job.id, "time": time.time()})

    def _check_duplicate(self, state: BackendState, job: Job) -> None:
        if job.id in self.jobs:
            state.record.rejected_duplicate += 1
            raise ApiError(
                409,
                f"Job with duplicate id already exists. Job ID: {job.id}",
                DUPLICATE_JOB,
                value=job.id,
                target=("id", "field"),
            )

    @staticmethod
    def _check_locked(state: BackendState) -> None:
        if state.locked:
            state.record.rejected_locked += 1
            raise ApiError(
                423,
                "The requested backend is currently reserved and cannot run jobs outside of the reservation.",
                RESERVED,
                value=state.name,
            )

    def _check_lanes(self, state: BackendState) -> None:
        """Every stored job of the backend counts, terminal ones included, until it is DELETEd."""
        if self.stored(state.name) >= state.lanes.hpc_workload_manager:
            state.record.rejected_lanes += 1
            raise ApiError(
                429,
                f"The maximum number of execution lanes for backend {state.name} has been reached.",
                LANES_FULL,
                value=state.name,
                solution="Delete completed jobs and/or wait for other clients to delete jobs.",
            )

    def cancel(self, job_id: str) -> None:
        """Cancel a Running job at once (its runner is stopped); 409/1306 when it already ended."""
        job = self.job(job_id)
        if not job.finish(CANCELLED):
            raise ApiError(409, f"Job is not cancellable. Job ID: {job_id}.", NOT_CANCELLABLE, value=job_id)
        if job.task is not None:
            job.task.cancel()

    def delete(self, job_id: str) -> None:
        """Forget a terminal job, freeing its lane; 409/1337 while it is Running."""
        job = self.job(job_id)
        if job.status == RUNNING:
            raise ApiError(
                409,
                f"Deleting a job in a non-terminal state is not possible. Job ID: {job_id}.",
                NOT_DELETABLE,
                value=job_id,
            )
        del self.jobs[job_id]
        self.backends[job.backend].record.deletes.append({"id": job_id, "time": time.time()})

    def record(self) -> dict[str, Any]:
        """Per-backend lane use and history, for tests."""
        return {
            name: {
                "stored": self.stored(name),
                "running": sum(1 for j in self.jobs.values() if j.backend == name and j.status == RUNNING),
                "status": state.status,
                "locked": state.locked,
                "lanes": state.lanes.hpc_workload_manager,
                "job_duration_s": state.job_duration_s,
                "max_stored": state.record.max_stored,
                "submissions": state.record.submissions,
                "rejected_429": state.record.rejected_lanes,
                "rejected_423": state.record.rejected_locked,
                "rejected_409_duplicate": state.record.rejected_duplicate,
                "rejected_503": state.record.rejected_inactive,
                "deletes": len(state.record.deletes),
                "deleted": state.record.deletes,
                "admission_order": state.admission_order,
                "pub_widths": state.pub_widths,
            }
            for name, state in self.backends.items()
        }
