"""Accounting records of finished tasks and per-resource utilization, kept in memory from core events.

``Ledger`` follows the broker's events and keeps the last ``limit`` finished tasks, starting from those the
journal recovered; it is the ``AccountingSource`` the MetricsService reads.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from qrmid.core.events import Listener
from qrmid.core.tasks import Task, TaskState
from qrmid.core.usage import shots_used


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one finished task used. ``qpu_seconds`` is the time it held a backend slot (started to ended);
    ``shots`` are those it was charged (:func:`qrmid.core.usage.shots_used`: a completed task's only)."""

    seq: int
    task_id: str
    resource: str
    owner: str
    account: str
    slurm_job_id: str
    lease_id: str
    state: TaskState
    created_at: float
    started_at: float | None
    ended_at: float
    shots: int
    member: str = ""  # a pool's task: the member resource that ran it

    @property
    def qpu_seconds(self) -> float:
        return self.ended_at - self.started_at if self.started_at is not None else 0.0


@dataclass(frozen=True, slots=True)
class Filters:
    """Which records to list; empty strings and None match everything. Times bound ``ended_at``."""

    owner: str = ""
    account: str = ""
    resource: str = ""
    slurm_job_id: str = ""
    since: float | None = None
    until: float | None = None
    after_seq: int = 0

    def match(self, record: UsageRecord) -> bool:
        return (record.seq > self.after_seq
                and (not self.owner or record.owner == self.owner)
                and (not self.account or record.account == self.account)
                and (not self.resource or self.resource in (record.resource, record.member))
                and (not self.slurm_job_id or record.slurm_job_id == self.slurm_job_id)
                and (self.since is None or record.ended_at >= self.since)
                and (self.until is None or record.ended_at < self.until))


@dataclass(frozen=True, slots=True)
class Utilization:
    """One resource's use over a window ending now."""

    busy_slot_seconds: float
    ended: dict[TaskState, int]
    shots: int
    qpu_seconds: float


class AccountingSource(Protocol):
    """Where the MetricsService reads accounting records and utilization from."""

    def records(self, filters: Filters) -> Iterator[UsageRecord]:
        """Matching records, oldest (lowest ``seq``) first."""
        ...

    def utilization(self, resource: str, window: float) -> Utilization:
        """Use of ``resource`` over the last ``window`` seconds."""
        ...


def account_of(task: Task) -> str:
    """The task's account; its owner when it has none."""
    return task.account or task.owner


class Ledger(Listener):
    """Records every finished task (the last ``limit``) and the tasks holding a slot now."""

    def __init__(self, limit: int) -> None:
        self._done: deque[UsageRecord] = deque(maxlen=limit)
        self._running: dict[str, Task] = {}
        self._seq = 0

    def task_changed(self, task: Task) -> None:
        view = task.view
        if view.state is TaskState.RUNNING:
            self._running[task.id] = task
            return
        if not view.state.terminal:
            return
        self._running.pop(task.id, None)
        self._record(task)

    def task_mirrored(self, task: Task) -> None:
        """Every member keeps the accounting records of the whole cluster."""
        self.task_changed(task)

    def task_refused(self, task: Task) -> None:
        """A task whose record could not be made durable was never taken: it leaves no accounting record."""
        self._running.pop(task.id, None)
        if any(record.task_id == task.id for record in self._done):
            self._done = deque((record for record in self._done if record.task_id != task.id), maxlen=self._done.maxlen)

    def restore(self, tasks: Iterable[Task]) -> None:
        """Take the records of tasks an earlier run finished (from the journal), in the order they ended; and
        count running ones as holding their slot."""
        for task in sorted((t for t in tasks if t.state.terminal), key=lambda t: t.view.ended_at or 0.0):
            self._record(task)
        self._running.update((task.id, task) for task in tasks if task.state is TaskState.RUNNING)

    def _record(self, task: Task) -> None:
        view = task.view
        self._seq += 1
        self._done.append(UsageRecord(
            seq=self._seq, task_id=task.id, resource=task.resource, owner=task.owner, account=account_of(task),
            slurm_job_id=task.slurm_job_id, lease_id=task.lease_id, state=view.state, created_at=view.created_at,
            started_at=view.started_at, ended_at=view.ended_at or time.time(), shots=shots_used(task),
            member=task.member))

    def records(self, filters: Filters) -> Iterator[UsageRecord]:
        return (record for record in list(self._done) if filters.match(record))

    def utilization(self, resource: str, window: float) -> Utilization:
        now = time.time()
        start = now - window
        busy = sum(now - max(task.view.started_at or now, start)
                   for task in self._running.values() if resource in (task.resource, task.member))
        ended = dict.fromkeys((TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED), 0)
        shots = 0
        qpu = 0.0
        for record in _in_window(self._done, resource, start):
            if record.started_at is not None:
                busy += record.ended_at - max(record.started_at, start)
            ended[record.state] += 1
            shots += record.shots
            qpu += record.qpu_seconds
        return Utilization(busy, ended, shots, qpu)


def _in_window(records: Iterable[UsageRecord], resource: str, start: float) -> Iterator[UsageRecord]:
    return (r for r in records if resource in (r.resource, r.member) and r.ended_at >= start)
