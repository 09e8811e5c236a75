"""The async interface every resource type implements; the scheduler drives it, adapters own the wire."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum

from qrmid.backends.checks import Check
from qrmid.backends.payloads import Payload, PayloadKind


class InvalidPayload(ValueError):
    """A payload the backend cannot run; the message tells the caller what to fix."""


class Busy(Exception):
    """The backend cannot take the job now (lanes full, reserved): the task goes back to the head of its
    queue and dispatch backs off."""


class BackendUnavailable(Exception):
    """The backend's service cannot answer now (unreachable, failing); asking again later may succeed."""


class CredentialsRefused(BackendUnavailable):
    """The service refused the credentials the daemon is configured with; an admin must fix them."""


class NotDispatching(BackendUnavailable):
    """This member does not dispatch the resource (``dispatch = false``): it holds no credentials and never calls
    the backend."""

    def __init__(self, resource: str) -> None:
        super().__init__(f"resource {resource} is dispatched by another cluster member (dispatch = false here): this "
                         "member holds no credentials for it and does not call its backend")


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
    reserved: bool = False  # the backend runs only its own reservation's jobs (IBM's ``locked``)


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

    #: Jobs live on a service and outlive the daemon: submissions are journaled before they are made, a job is
    #: released only once its end is journaled, and a restarted daemon re-attaches (``attach``) to the rest.
    remote: bool = False

    async def record_refs(self, refs: dict[str, str]) -> None:
        """Journal new references of this resource's jobs ({task id: reference}) and return once they are
        durable; the broker replaces this. An adapter that creates a job after ``submit`` returned (a packed
        job) records its intent before the write that creates it and the job's reference after it, so that
        ``attach`` can tell after a restart whether the job exists."""

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

    async def adopt_target(self, target: str) -> None:
        """Take the device description another member published (the text ``target()`` returns there) so that
        ``validate`` and ``target`` work without reaching the backend; default: nothing to take. ValueError when
        ``target`` is not such a description."""

    def metadata(self) -> dict[str, str]:
        """QRMI metadata of the resource."""
        return {}

    @abstractmethod
    def validate(self, payload: Payload) -> int | Check:
        """Check ``payload``: its number of shots when a quick look settles it, else the Check that reads it fully
        (the daemon runs that in a validation worker process, bounded in memory and time). Runs on the event loop,
        so it never parses the payload itself.

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

    #: ``stage`` prepares the next submission while every slot is busy, so that a freed slot is taken at once.
    stages_ahead: bool = False

    async def stage(self, task_id: str, payload: Payload) -> None:
        """Prepare the submission of ``task_id`` (e.g. upload its input) before a slot is free for it."""

    async def unstage(self, task_id: str) -> None:
        """Undo ``stage``: the task will not be submitted now (stopped, or put back in the queue)."""

    async def attach(self, task_id: str, ref: str | None) -> str | None:
        """Take back the job of a task submitted before a restart: ``ref`` is its journaled reference, None when
        the daemon stopped during its submission. Return the reference to follow the job by, or None to run the
        task again (nothing of it survives on the backend); raise when its fate cannot be known (the task then
        fails with that reason). By default every unfinished task runs again: its run died with the daemon."""
        return None

    async def cleanup(self, ref: str) -> None:
        """Free what the backend still holds for the job (e.g. an IBM execution lane)."""

    def flush(self) -> None:
        """The resource's queue just emptied: hand over anything held back for packing (e.g. close an
        open Pasqal batch); called on the event loop, so it only starts what takes time."""
