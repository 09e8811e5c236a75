"""``noop``: completes every task after a fixed delay without simulating anything.

For measuring the daemon itself (``python -m qrmid.bench``) and for exercising scheduling with
controlled timing.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Literal

from pydantic import Field

from qrmid.backends.base import Adapter, BackendState, BackendStatus, JobState, JobStatus, Output
from qrmid.backends.payloads import Payload, PayloadKind, PulserSequence
from qrmid.backends.settings import ResourceSettings


class Settings(ResourceSettings):
    """Config keys of a ``noop`` resource."""

    type: Literal["noop"]
    slots: int = Field(8, ge=1, le=100_000, description="tasks in flight at once")
    delay_seconds: float = Field(0.0, ge=0, le=86_400, description="how long each task runs")


class Noop(Adapter):
    """Accepts every payload kind; each task completes ``delay_seconds`` after submission."""

    payload_kinds = frozenset(PayloadKind)

    def __init__(self, settings: Settings) -> None:
        self.name = settings.name
        self.delay = settings.delay_seconds
        self._slots = settings.slots
        self._due: dict[str, float] = {}
        self._cancelled: set[str] = set()

    @property
    def slots(self) -> int:
        return self._slots

    async def status(self) -> BackendStatus:
        return BackendStatus(BackendState.ONLINE)

    async def target(self) -> str:
        return json.dumps({"name": self.name, "description": "no-op backend"})

    def validate(self, payload: Payload) -> int:
        return payload.job_runs if isinstance(payload, PulserSequence) else 0

    async def submit(self, task_id: str, payload: Payload) -> str:
        self._due[task_id] = time.monotonic() + self.delay
        return task_id

    async def poll(self, ref: str) -> JobStatus:
        if ref in self._cancelled:
            return JobStatus(JobState.CANCELLED, "cancelled")
        if time.monotonic() >= self._due[ref]:
            return JobStatus(JobState.COMPLETED)
        return JobStatus(JobState.RUNNING)

    async def wait(self, ref: str, timeout: float) -> JobStatus:
        await asyncio.sleep(max(0.0, min(timeout, self._due[ref] - time.monotonic())))
        return await self.poll(ref)

    async def cancel(self, ref: str) -> None:
        self._cancelled.add(ref)

    async def output(self, ref: str) -> Output:
        return Output(data=json.dumps({"task": ref}).encode(), logs="noop\n")

    async def cleanup(self, ref: str) -> None:
        self._due.pop(ref, None)
        self._cancelled.discard(ref)
