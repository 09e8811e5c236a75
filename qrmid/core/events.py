"""Hooks the core calls as tasks and leases change, so the journal and the metrics can follow them without
the core knowing either."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qrmid.backends.base import BackendStatus
    from qrmid.core.allocations import Allocation
    from qrmid.core.leases import Lease
    from qrmid.core.tasks import Task
    from qrmid.core.windows import Window

log = logging.getLogger(__name__)


class Listener:
    """Receives core events. Methods run on the event loop: they must be quick and never block on I/O."""

    def task_queued(self, task: Task) -> None:
        """A new task was accepted; its payload is still set."""

    def task_refused(self, task: Task) -> None:
        """A task announced by ``task_queued`` was not taken after all (its record could not be made durable):
        forget it."""

    def task_changed(self, task: Task) -> None:
        """``task`` moved to ``task.view.state``; a running task has its ``remote_ref``, a completed one its
        result and logs."""

    def task_submitting(self, task: Task) -> None:
        """``task`` is about to be handed to a backend whose jobs outlive the daemon (write-ahead)."""

    def task_ref(self, task: Task) -> None:
        """``task.remote_ref`` changed while the task stayed in its state (e.g. its packed job was placed)."""

    def task_bound(self, task: Task) -> None:
        """A pool bound queued ``task`` to ``task.member``, whose scheduler runs it from now on."""

    def job_released(self, task: Task) -> None:
        """The backend no longer holds the finished ``task``'s job (its cleanup ran)."""

    def task_mirrored(self, task: Task) -> None:
        """``task`` moved to ``task.view.state`` on another member, which recorded it (cluster mode)."""

    def cancel_requested(self, task: Task, reason: str) -> None:
        """Ask the member that dispatches ``task``'s resource to cancel it, for ``reason`` (cluster mode)."""

    def resource_checked(self, name: str, status: BackendStatus, slots: int, target: str) -> None:
        """This daemon, dispatching resource ``name``, found its backend in ``status`` with ``slots`` and device
        description ``target`` ('' when it could not be read)."""

    def writable(self) -> None:
        """Raise Unavailable when this listener cannot record events now (a journal on a full disk)."""

    async def durable(self) -> None:
        """Return once every earlier event is recorded for good; Unavailable when it cannot be."""

    async def recorded(self, task: Task) -> None:
        """Return once ``task``'s acceptance (``task_queued``) is recorded for good; Unavailable when it cannot be
        now, or never can be."""

    async def states_recorded(self, task: Task) -> None:
        """Return once every event of ``task`` so far is recorded for good (other tasks' later ones aside);
        Unavailable when it cannot be now."""

    def lease_granted(self, lease: Lease) -> None:
        """A lease was granted."""

    def lease_ended(self, lease: Lease, reason: str) -> None:
        """A lease was released, revoked or expired."""

    def resource_drained(self, name: str, reason: str) -> None:
        """An admin drained resource ``name`` (dispatching stops) with ``reason``."""

    def resource_resumed(self, name: str) -> None:
        """An admin resumed resource ``name``."""

    def window_created(self, window: Window) -> None:
        """An admin created time window ``window`` (a reservation or a maintenance window)."""

    def window_deleted(self, window: Window) -> None:
        """An admin's time window ``window`` was deleted, or closed."""

    def allocation_set(self, allocation: Allocation) -> None:
        """An admin set ``allocation`` (replacing its account's allocation on the same resources)."""

    def allocation_deleted(self, allocation: Allocation) -> None:
        """An admin deleted ``allocation``."""


class Events(Listener):
    """Passes each event to every subscribed listener; a listener that raises is logged and skipped."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def task_queued(self, task: Task) -> None:
        for listener in self._listeners:
            _safely(listener.task_queued, task)

    def task_changed(self, task: Task) -> None:
        for listener in self._listeners:
            _safely(listener.task_changed, task)

    def task_refused(self, task: Task) -> None:
        for listener in self._listeners:
            _safely(listener.task_refused, task)

    def task_submitting(self, task: Task) -> None:
        for listener in self._listeners:
            _safely(listener.task_submitting, task)

    def task_ref(self, task: Task) -> None:
        for listener in self._listeners:
            _safely(listener.task_ref, task)

    def task_bound(self, task: Task) -> None:
        for listener in self._listeners:
            _safely(listener.task_bound, task)

    def job_released(self, task: Task) -> None:
        for listener in self._listeners:
            _safely(listener.job_released, task)

    def task_mirrored(self, task: Task) -> None:
        for listener in self._listeners:
            _safely(listener.task_mirrored, task)

    def cancel_requested(self, task: Task, reason: str) -> None:
        for listener in self._listeners:
            _safely(listener.cancel_requested, task, reason)

    def resource_checked(self, name: str, status: BackendStatus, slots: int, target: str) -> None:
        for listener in self._listeners:
            _safely(listener.resource_checked, name, status, slots, target)

    def writable(self) -> None:
        for listener in self._listeners:
            listener.writable()

    async def durable(self) -> None:
        for listener in self._listeners:
            await listener.durable()

    async def recorded(self, task: Task) -> None:
        for listener in self._listeners:
            await listener.recorded(task)

    async def states_recorded(self, task: Task) -> None:
        for listener in self._listeners:
            await listener.states_recorded(task)

    def lease_granted(self, lease: Lease) -> None:
        for listener in self._listeners:
            _safely(listener.lease_granted, lease)

    def lease_ended(self, lease: Lease, reason: str) -> None:
        for listener in self._listeners:
            _safely(listener.lease_ended, lease, reason)

    def resource_drained(self, name: str, reason: str) -> None:
        for listener in self._listeners:
            _safely(listener.resource_drained, name, reason)

    def resource_resumed(self, name: str) -> None:
        for listener in self._listeners:
            _safely(listener.resource_resumed, name)

    def window_created(self, window: Window) -> None:
        for listener in self._listeners:
            _safely(listener.window_created, window)

    def window_deleted(self, window: Window) -> None:
        for listener in self._listeners:
            _safely(listener.window_deleted, window)

    def allocation_set(self, allocation: Allocation) -> None:
        for listener in self._listeners:
            _safely(listener.allocation_set, allocation)

    def allocation_deleted(self, allocation: Allocation) -> None:
        for listener in self._listeners:
            _safely(listener.allocation_deleted, allocation)


def _safely(hook: object, *args: object) -> None:
    try:
        hook(*args)  # type: ignore[operator]
    except Exception:
        log.exception("event listener %r failed", hook)
