"""Gates: rules that hold queued tasks of a resource back beyond their place in line (another job's exclusive lease,
a reservation, a maintenance window, ...). The scheduler dispatches only tasks every gate admits; a held task keeps
its place, and GetTask shows the first hold's reason and pushes its estimated start to when the hold ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from qrmid.core.tasks import Task


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a queued task may not be dispatched now, and until when (epoch seconds; None when not known)."""

    reason: str
    until: float | None = None


class Gate(Protocol):
    """A rule over which of a resource's queued tasks may be dispatched now."""

    def hold(self, task: Task, now: float) -> Hold | None:
        """Why ``task`` may not be dispatched at ``now`` (epoch seconds); None when it may."""
        ...

    def changes_at(self, now: float) -> float | None:
        """The next time (epoch seconds) this gate's verdicts change on their own, without the scheduler being woken
        (a window opening or closing); None when they change only on a wake."""
        ...
