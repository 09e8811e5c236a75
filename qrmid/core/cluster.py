"""What the core knows of cluster mode: the members sharing one store, as admins are shown them, and what the link
to that store drives in the core. The store side (``qrmid.store.members``) implements ``Membership`` and drives a
``Replica`` (the broker); a single daemon has neither."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from qrmid.backends.base import BackendStatus
    from qrmid.core.allocations import Allocations
    from qrmid.core.leases import Lease
    from qrmid.core.tasks import Task
    from qrmid.core.windows import Window, Windows


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One resource's dispatcher: the member elected for it and the epoch of that election."""

    resource: str
    member: str
    epoch: int
    since: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member of the cluster as the store knows it."""

    name: str
    started_at: float  # epoch seconds
    heartbeat_at: float  # epoch seconds of its last heartbeat
    healthy: bool  # its heartbeat is recent
    handing_over: bool  # told to hand over its resources: it dispatches none until it restarts or is told back
    dispatches: tuple[str, ...]  # the resources it dispatches now


class Membership(Protocol):
    """The cluster's members, read from and steered through the shared store."""

    member: str  # this member's name

    async def members(self) -> list[MemberView]:
        """Every member that ever joined, this one included, by name."""
        ...

    async def dispatchers(self) -> list[Dispatch]:
        """Each resource's current dispatcher, by resource name."""
        ...

    async def fetch(self, task_id: str) -> None:
        """Read task ``task_id`` from the store into the core, if the store has it: another member took it and its
        notification has not arrived yet."""
        ...

    async def fetch_request(self, owner: str, request_id: str) -> str | None:
        """The id of the task ``owner`` started with ``request_id`` on any member, read into the core; None when
        there is none."""
        ...

    async def claim_exclusive(self, lease: Lease, waiter_id: str) -> bool:
        """Record exclusive ``lease``, for which waiter ``waiter_id`` waited, in the store unless another member granted
        a live exclusive lease on its resource or an exclusive Acquire waits ahead of it (race-free across members);
        whether it was recorded."""
        ...

    async def claim_window(self, window: Window) -> Window | None:
        """Record admin window ``window`` in the store unless a window of its resource stored by any member overlaps
        it (race-free across members); the overlapping window, else None."""
        ...

    async def enter_line(self, resource: str, waiter_id: str, asked_at: float, until: float) -> None:
        """Record an exclusive Acquire waiting for ``resource`` on this member until ``until`` (epoch seconds), so that
        every member holds the resource's tasks back and grants in the order asked; Unavailable when it cannot be."""
        ...

    async def leave_line(self, resource: str, waiter_id: str) -> None:
        """Remove a waiting exclusive Acquire from the store (granted or given up); one that cannot be removed lapses
        at its ``until``."""
        ...


    async def handover(self, member: str, back: bool = False) -> MemberView:
        """Tell ``member`` to hand over every resource it dispatches and take none until it restarts (or, with
        ``back``, to take resources again); NotFound when no such member ever joined."""
        ...


class Replica(Protocol):
    """What a member's link to the shared store drives in the core (the broker): other members' records to take,
    and the dispatch of resources moving to and from this member."""

    windows: Windows  # the admins' windows, which every member mirrors
    allocations: Allocations  # the admins' allocations, which every member mirrors and enforces

    def mirror(self, stored: Task) -> None:
        """Take a task as the store holds it."""
        ...

    async def lead(self, name: str, stored: list[Task], submitting: set[str], held: set[str]) -> None:
        """Dispatch resource ``name`` from now on, taking over the tasks the store holds for it."""
        ...

    def step_down(self, name: str, fenced: Iterable[str] = ()) -> None:
        """Stop dispatching resource ``name``; ``fenced``: tasks whose latest writes the store refused."""
        ...

    def take_back(self, task_ids: list[str]) -> None:
        """Drop the states of tasks that the store did not record (written by a dispatch that had ended)."""
        ...

    async def settle(self, name: str) -> None:
        """Return once no submission to resource ``name``'s backend is in flight."""
        ...

    async def hand_over(self, name: str) -> None:
        """Stop dispatching resource ``name`` and return once no submission to its backend is in flight."""
        ...

    def cancel_requested(self, task_id: str, reason: str) -> bool:
        """Cancel a task another member was asked to cancel, when this member dispatches it; whether it did."""
        ...

    def mirror_lease(self, lease_id: str, stored: Lease | None) -> None:
        """Take a lease as the store holds it (None: ended)."""
        ...

    def mirror_waits(self, name: str, waits: list[tuple[str, float, float]]) -> None:
        """Take the exclusive Acquires waiting for a resource on every member: (id, asked at, until)."""
        ...

    def mirror_drain(self, name: str, reason: str | None) -> None:
        """Take a resource's drain as the store holds it (None: resumed)."""
        ...

    async def mirror_state(self, name: str, status: BackendStatus, slots: int, target: str) -> None:
        """Take the status, slots and target a resource's dispatcher published."""
        ...

    def lease_ids(self) -> set[str]:
        """The ids of the live leases this member knows."""
        ...

    def resource_names(self) -> list[str]:
        """The resources this member serves."""
        ...
