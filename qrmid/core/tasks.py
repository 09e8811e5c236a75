"""Tasks and their state machine: QUEUED -> RUNNING -> COMPLETED | FAILED | CANCELLED.

A state is shown to callers (``shown``, ``watch``) only once the listeners have recorded it for good, so no caller
sees a task finished that a restarted daemon would run again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from qrmid.backends.payloads import Payload, PayloadKind
from qrmid.core.errors import FailedPrecondition, Unavailable
from qrmid.core.events import Listener

RECORD_RETRY_SECONDS = 0.5  # while the journal cannot record a state, how often to try showing it again


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
_RANK = {TaskState.QUEUED: 0, TaskState.RUNNING: 1, **dict.fromkeys(_TERMINAL, 2)}  # how far along a state is
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
    member: str = ""  # a pool's task: the member resource it was bound to at dispatch; empty until then
    allow_fallback: bool = False  # a pool's task may run on the pool's fallback member
    warnings: tuple[str, ...] = ()  # given when it was accepted (e.g. over a soft allocation)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remote_ref: str | None = None
    result: Result | None = None
    logs: str = ""
    history: list[TaskView] = field(default_factory=list)
    events: Listener = field(default_factory=Listener, repr=False)
    # may start before its acceptance is durable (RunTask on a local backend): nothing of it leaves the daemon, its
    # states are shown only once durable like any task's, and a record that fails takes it back unseen
    eager: bool = field(default=False, repr=False)
    size: int = field(init=False, default=0)  # the payload's size as submitted, kept when it is stored or emptied
    stored: StoredPayload | None = field(default=None, init=False, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _unshown: int = field(default=0, init=False, repr=False)  # last states of ``history`` not recorded for good yet
    _publisher: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

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

    @property
    def shown(self) -> TaskView:
        """The latest state recorded for good: what callers see (``view`` may be a step ahead)."""
        return self.history[-1 - self._unshown]

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
        self._unshown += 1
        self.events.task_changed(self)
        self._publish()

    def _publish(self) -> None:
        """Show the new state once it is recorded for good (at once with no running loop: nothing records)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._show(self._unshown)
            return
        if self._publisher is None:
            self._publisher = loop.create_task(self._show_when_recorded(), name=f"qrmid show task {self.id}")

    async def _show_when_recorded(self) -> None:
        try:
            while self._unshown:
                pending = self._unshown
                try:
                    await self.events.states_recorded(self)
                except Unavailable:  # the journal retries the write; show the state once it is in
                    await asyncio.sleep(RECORD_RETRY_SECONDS)
                    continue
                self._show(pending)
        finally:
            self._publisher = None

    def _show(self, recorded: int) -> None:
        """Show the oldest ``recorded`` of the unshown states."""
        self._unshown -= recorded
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def mirror(self, stored: Task) -> bool:
        """Take the states this copy lacks from ``stored``, the task as another member recorded it (cluster mode),
        with its result and logs; they are shown at once, being recorded. Whether any state was new. The pool
        member it is bound to is taken in any case."""
        self.member = stored.member
        new = [view for view in stored.history if _RANK[view.state] > _RANK[self.state]]
        if not new:
            return False
        for view in new:
            self.history.append(replace(self.view, state=view.state, reason=view.reason, started_at=view.started_at,
                                        ended_at=view.ended_at))
        self.remote_ref = stored.remote_ref
        self.result, self.logs = stored.result, stored.logs
        if self.state.terminal:
            self.payload = self.payload.emptied()
        self._show(0)
        return True

    def rewind(self) -> None:
        """Drop the states not recorded for good: the store refused them (this member no longer dispatches the
        task), so no caller has seen them and another member decides them now."""
        if self._publisher is not None:
            self._publisher.cancel()
            self._publisher = None
        if self._unshown:
            del self.history[-self._unshown:]
            self._unshown = 0

    async def settled(self) -> TaskView:
        """The task's latest state once it is recorded for good and shown; Unavailable when it cannot be now."""
        await self.events.states_recorded(self)
        while self._unshown:
            await self._changed.wait()
        return self.shown

    async def watch(self) -> AsyncIterator[TaskView]:
        """Yield every state the task has been in, then each new one, until a terminal one (each once it is
        recorded for good)."""
        seen = 0
        while True:
            changed = self._changed
            while seen < len(self.history) - self._unshown:
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
