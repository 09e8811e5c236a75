"""Hooks the core calls as tasks and leases change, so the journal and the metrics can follow them without
the core knowing either."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qrmid.core.leases import Lease
    from qrmid.core.tasks import Task

log = logging.getLogger(__name__)


class Listener:
    """Receives core events. Methods run on the event loop: they must be quick and never block on I/O."""

    def task_queued(self, task: Task) -> None:
        """A new task was accepted; its payload is still set."""

    def task_changed(self, task: Task) -> None:
        """``task`` moved to ``task.view.state``; a running task has its ``remote_ref``, a completed one its
        result and logs."""

    def lease_granted(self, lease: Lease) -> None:
        """A lease was granted."""

    def lease_ended(self, lease: Lease, reason: str) -> None:
        """A lease was released, revoked or expired."""


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

    def lease_granted(self, lease: Lease) -> None:
        for listener in self._listeners:
            _safely(listener.lease_granted, lease)

    def lease_ended(self, lease: Lease, reason: str) -> None:
        for listener in self._listeners:
            _safely(listener.lease_ended, lease, reason)


def _safely(hook: object, *args: object) -> None:
    try:
        hook(*args)  # type: ignore[operator]
    except Exception:
        log.exception("event listener %r failed", hook)
