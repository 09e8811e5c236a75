"""Tasks and their state machine: QUEUED -> RUNNING -> COMPLETED | FAILED | CANCELLED."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from qrmid.backends.payloads import Payload, PayloadKind
from qrmid.core.errors import FailedPrecondition
from qrmid.core.events import Listener


class TaskState(Enum):
    """QRMI's five task states."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})
_ALLOWED = {
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.FAILED, TaskState.CANCELLED}),
    TaskState.RUNNING: _TERMINAL,
}


class PayloadUnreadable(Exception):
    """A stored payload could not be read back; the message says where and why."""


class StoredPayload(Protocol):
    """A queued task's payload kept out of memory (on disk) until the task is dispatched."""

    async def load(self) -> Payload:
        """The payload, read back (in a worker thread); PayloadUnreadable when it cannot be."""
        ...

    def discard(self) -> None:
        """Free what holds the payload; never blocks."""
        ...


class PayloadStore(Protocol):
    """Where queued payloads above a size wait for dispatch, out of memory."""

    threshold: int  # payloads of this many bytes or fewer stay in memory

    async def put(self, payload: Payload) -> StoredPayload | None:
        """``payload`` stored; None when it stays in memory (small enough, or it could not be stored)."""
        ...


@dataclass(frozen=True, slots=True)
class Result:
    """A task's result as the backend produced it."""

    data: bytes
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class TaskView:
    """An immutable snapshot of a task, as callers see it at one state."""

    id: str
    resource: str
    owner: str
    payload_kind: PayloadKind
    state: TaskState
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    lease_id: str = ""
    slurm_job_id: str = ""
    client_request_id: str = ""
    priority: str = ""
    account: str = ""
    shots: int = 0


@dataclass(eq=False)
class Task:
    """One payload run on one resource. Only the resource's scheduler drives its transitions."""

    resource: str
    owner: str
    payload: Payload
    shots: int = 0
    lease_id: str = ""
    slurm_job_id: str = ""
    client_request_id: str = ""
    priority: str = ""  # priority class; empty: the resource's default
    account: str = ""  # fair-share account; empty: the owner
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remote_ref: str | None = None
    result: Result | None = None
    logs: str = ""
    history: list[TaskView] = field(default_factory=list)
    events: Listener = field(default_factory=Listener, repr=False)
    size: int = field(init=False, default=0)  # the payload's size as submitted, kept when it is stored or emptied
    stored: StoredPayload | None = field(default=None, init=False, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self.size = self.payload.size
        self.history.append(
            TaskView(
                id=self.id,
                resource=self.resource,
                owner=self.owner,
                payload_kind=self.payload.kind,
                state=TaskState.QUEUED,
                created_at=time.time(),
                lease_id=self.lease_id,
                slurm_job_id=self.slurm_job_id,
                client_request_id=self.client_request_id,
                priority=self.priority,
                account=self.account or self.owner,
                shots=self.shots,
            )
        )

    def store(self, stored: StoredPayload) -> None:
        """Keep the payload only in ``stored`` until dispatch: the task holds just its kind meanwhile."""
        self.stored = stored
        self.payload = self.payload.emptied()

    async def full_payload(self) -> Payload:
        """The payload to submit, read back from where it was stored, if it was."""
        return self.payload if self.stored is None else await self.stored.load()

    @property
    def view(self) -> TaskView:
        return self.history[-1]

    @property
    def state(self) -> TaskState:
        return self.view.state

    def transition(self, state: TaskState, reason: str = "") -> None:
        """Move to ``state``, stamping the time; raise FailedPrecondition when the machine forbids it."""
        current = self.view
        if state not in _ALLOWED.get(current.state, frozenset()):
            raise FailedPrecondition(f"task {self.id} is {current.state.value}; it cannot become {state.value}")
        now = time.time()
        self.history.append(
            replace(
                current,
                state=state,
                reason=reason,
                started_at=now if state is TaskState.RUNNING else current.started_at,
                ended_at=now if state.terminal else None,
            )
        )
        if state.terminal:
            self.payload = self.payload.emptied()
            if self.stored is not None:
                self.stored.discard()
                self.stored = None
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        self.events.task_changed(self)

    async def watch(self) -> AsyncIterator[TaskView]:
        """Yield every state the task has been in, then each new one, until a terminal one."""
        seen = 0
        while True:
            changed = self._changed
            while seen < len(self.history):
                view = self.history[seen]
                seen += 1
                yield view
                if view.state.terminal:
                    return
            await changed.wait()

    async def wait(self) -> TaskView:
        """Return the task's terminal state once it has one."""
        async for view in self.watch():
            if view.state.terminal:
                return view
        raise AssertionError("watch() ends only on a terminal state")

