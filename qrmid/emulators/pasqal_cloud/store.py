"""Batches and jobs: their state, the status rules of the API and their JSON shapes.

Job: ``PENDING`` → ``RUNNING`` → ``DONE`` | ``ERROR`` | ``CANCELED``. A batch's status is derived from its jobs
(see ``Batch.status``) unless it was cancelled or timed out, which pins it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JOB_STATUSES = ("PENDING", "RUNNING", "DONE", "ERROR", "CANCELED")
TERMINAL = frozenset({"DONE", "ERROR", "CANCELED"})
_order = itertools.count()


def now_iso() -> str:
    """The current time in the offset form the API emits."""
    return datetime.now(UTC).isoformat()


@dataclass
class Job:
    """One job: ``runs`` shots of the batch sequence (built with ``variables``) or of its own ``sequence``."""

    batch_id: str
    project_id: str
    runs: int
    variables: dict[str, Any]
    sequence: str | None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "PENDING"
    errors: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = ""
    start_timestamp: str | None = None
    end_timestamp: str | None = None
    parent_id: str | None = None
    result: dict[str, Any] | None = None
    order: int = field(default_factory=lambda: next(_order))
    canceled: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.updated_at = self.created_at

    def move(self, status: str) -> None:
        """Change status and stamp the matching timestamps."""
        stamp = now_iso()
        self.status = status
        self.updated_at = stamp
        if status == "RUNNING":
            self.start_timestamp = stamp
        elif status in TERMINAL:
            self.end_timestamp = stamp
            if status == "CANCELED":
                self.canceled.set()

    def to_json(self, with_sequence: bool = False) -> dict[str, Any]:
        body = {
            "id": self.id,
            "batch_id": self.batch_id,
            "project_id": self.project_id,
            "runs": self.runs,
            "status": self.status,
            "errors": list(self.errors),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "start_timestamp": self.start_timestamp,
            "end_timestamp": self.end_timestamp,
            "variables": self.variables,
            "parent_id": self.parent_id,
        }
        if with_sequence:
            body["sequence"] = self.sequence
        return body


@dataclass
class Batch:
    """A batch of jobs on one device type; open batches accept jobs until completed or timed out."""

    project_id: str
    user_id: str
    device_type: str
    sequence_builder: str | None
    open: bool
    webhook: str | None = None
    configuration: Any = None
    backend_configuration: str | None = None
    tags: list[str] = field(default_factory=list)
    parent_id: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    jobs: list[Job] = field(default_factory=list)
    pinned_status: str | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = ""
    start_datetime: str | None = None
    end_datetime: str | None = None
    order: int = field(default_factory=lambda: next(_order))
    last_added: float = field(default_factory=time.monotonic)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.updated_at = self.created_at

    @property
    def status(self) -> str:
        """Derived per the API rules; an open batch with nothing left to run stays RUNNING once started."""
        if self.pinned_status:
            return self.pinned_status
        statuses = [job.status for job in self.jobs]
        unfinished = [status for status in statuses if status not in TERMINAL]
        if not unfinished:
            if self.open:
                return "RUNNING" if self.start_datetime else "PENDING"
            if statuses and all(status == "ERROR" for status in statuses):
                return "ERROR"
            if statuses and all(status == "CANCELED" for status in statuses):
                return "CANCELED"
            return "DONE"
        if len(unfinished) == len(statuses) and all(status == "PENDING" for status in statuses):
            return "PENDING"
        return "RUNNING"

    @property
    def finished(self) -> bool:
        """True once the batch can get no further work: pinned, or closed with every job terminal."""
        return self.pinned_status is not None or (not self.open and all(j.status in TERMINAL for j in self.jobs))

    def touch(self) -> None:
        self.updated_at = now_iso()
        self.wake.set()

    def counts(self) -> dict[str, int]:
        tally = Counter(job.status for job in self.jobs)
        return {status: tally.get(status, 0) for status in JOB_STATUSES}

    def to_json(self, device_status: str, with_jobs: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "project_id": self.project_id,
            "user_id": self.user_id,
            "status": self.status,
            "open": self.open,
            "complete": not self.open,
            "device_type": self.device_type,
            "device_status": device_status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "start_datetime": self.start_datetime,
            "end_datetime": self.end_datetime,
            "sequence_builder": self.sequence_builder,
            "webhook": self.webhook,
            "configuration": self.configuration,
            "backend_configuration": self.backend_configuration,
            "tags": list(self.tags),
            "parent_id": self.parent_id,
            "priority": 10,
            "queue_priority": "MEDIUM",
            "jobs_count": len(self.jobs),
            "jobs_count_per_status": self.counts(),
        }
        if with_jobs:
            body["jobs"] = [job.to_json() for job in self.jobs]
        else:
            body["job_ids"] = [job.id for job in self.jobs]
        return body


@dataclass
class Store:
    """All batches and jobs of one emulator process, plus what the test record shows about them."""

    batches: dict[str, Batch] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    requests: int = 0  # HTTP requests from clients, the test hooks aside

    def add_batch(self, batch: Batch) -> None:
        self.batches[batch.id] = batch

    def add_jobs(self, batch: Batch, jobs: list[Job]) -> None:
        """Register jobs (already appended to ``batch.jobs``) with a fingerprint of what they run."""
        for job in jobs:
            self.jobs[job.id] = job
            program = job.sequence if job.sequence is not None else batch.sequence_builder or ""
            digest = hashlib.sha256()
            digest.update(program.encode())
            digest.update(json.dumps([job.runs, job.variables], sort_keys=True).encode())
            self.fingerprints[job.id] = digest.hexdigest()

    def batch_for(self, batch_id: str, projects: tuple[str, ...]) -> Batch:
        """The batch if the caller's projects include its project; KeyError otherwise."""
        batch = self.batches[batch_id]
        if batch.project_id not in projects:
            raise KeyError(batch_id)
        return batch

    def job_for(self, job_id: str, projects: tuple[str, ...]) -> Job:
        job = self.jobs[job_id]
        if job.project_id not in projects:
            raise KeyError(job_id)
        return job
