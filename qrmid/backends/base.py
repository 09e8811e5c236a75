"""The async interface every resource type implements; the scheduler drives it, adapters own the wire."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum

from qrmid.backends.payloads import Payload, PayloadKind


class InvalidPayload(ValueError):
    """A payload the backend cannot run; the message tells the caller what to fix."""


class Busy(Exception):
    """The backend cannot take the job now (lanes full, reserved): the task goes back to the head of its
    queue and dispatch backs off."""


class BackendState(Enum):
    """Whether the backend takes work now."""

    ONLINE = "online"
    OFFLINE = "offline"
    PAUSED = "paused"


class JobState(Enum):
    """State of one submitted job as the backend reports it."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not JobState.RUNNING


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """The backend's state and, when known, how many jobs wait on its side."""

    state: BackendState
    reason: str = ""
    remote_queue: int | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A submitted job's state; ``reason`` says why it failed or was cancelled."""

    state: JobState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Output:
    """What a completed job produced."""

    data: bytes
    content_type: str = "application/json"
    logs: str = ""


class Adapter(ABC):
    """One resource's backend. Methods never block the event loop.

    The scheduler calls ``validate`` before queueing, then ``submit`` when a slot is free, ``wait`` until the
    job is terminal, ``output`` when it completed, and ``cleanup`` last, whatever happened.
    """

    #: Payload variants this backend runs.
    payload_kinds: frozenset[PayloadKind]

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many jobs may be on the backend at once."""

    async def start(self) -> None:
        """Open connections, pools and caches before the first call."""

    async def close(self) -> None:
        """Release everything ``start`` opened."""

    @abstractmethod
    async def status(self) -> BackendStatus:
        """The backend's current state."""

    @abstractmethod
    async def target(self) -> str:
        """The vendor's device description as JSON text (QRMI target)."""

    def metadata(self) -> dict[str, str]:
        """QRMI metadata of the resource."""
        return {}

    @abstractmethod
    def validate(self, payload: Payload) -> int:
        """Check ``payload`` fully (CPU-bound; run in a worker thread) and return its number of shots.

        Raises InvalidPayload with a message a person can act on.
        """

    @abstractmethod
    async def submit(self, task_id: str, payload: Payload) -> str:
        """Hand the job to the backend and return its remote reference; Busy when it cannot take it now."""

    @abstractmethod
    async def poll(self, ref: str) -> JobStatus:
        """The job's state now."""

    async def wait(self, ref: str, timeout: float) -> JobStatus:
        """The job's state once it is terminal or ``timeout`` seconds have passed; adapters that can be
        told of completion override this to answer at once."""
        await asyncio.sleep(timeout)
        return await self.poll(ref)

    @abstractmethod
    async def cancel(self, ref: str) -> None:
        """Ask the backend to stop the job."""

    @abstractmethod
    async def output(self, ref: str) -> Output:
        """The result and logs of a completed job."""

    async def cleanup(self, ref: str) -> None:
        """Free what the backend still holds for the job (e.g. an IBM execution lane)."""

    async def flush(self) -> None:
        """The resource's queue just emptied: hand over anything held back for packing (e.g. close an
        open Pasqal batch)."""
