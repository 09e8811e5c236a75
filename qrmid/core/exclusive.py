"""Lease modes on one resource: the line of exclusive Acquires waiting for it, and the gate that holds other tasks
back while an exclusive lease holds the resource or waits for it, and while slots are kept free for leases with
min_slots.

Exclusive: while an exclusive lease is live only its tasks are dispatched. An exclusive Acquire is granted in the order
asked, once it is first in line, no other exclusive lease is live and no task is on the backend; from the moment one
waits, no task of anyone starts (so a stream of shared work cannot starve it). In cluster mode the line spans the
members: each member's waiters are stored, the others mirror them (``elsewhere``), and the store grants in turn.

min_slots: a task may take a slot only when, after it, the free slots still cover what the other leases with min_slots
keep free (each ``min_slots`` less its tasks on the backend); at least one slot always stays for everyone else, and
while every slot is busy no other task is taken ahead of the next free one (it could be a kept one).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from qrmid.core.errors import DeadlineExceeded
from qrmid.core.gates import Hold
from qrmid.core.leases import Lease, LeaseTable
from qrmid.core.scheduler import Scheduler
from qrmid.core.tasks import Task

POLL = 1.0  # seconds between a waiter's checks when nothing wakes it (a lease expiring, another member's grant)


@dataclass(eq=False, slots=True)
class Waiter:
    """One exclusive Acquire waiting for its grant."""

    owner: str
    slurm_job_id: str
    asked_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def turn(self) -> tuple[float, str]:
        """Where it stands in the line: first asked, first granted (its id breaks a tie)."""
        return self.asked_at, self.id


@dataclass(frozen=True, slots=True)
class Verdict:
    """The exclusive lease whose tasks alone may go (its id), and why every other task is held (None for each when no
    exclusive lease holds the resource or waits for it); the leases keeping slots free and the tasks on the backend
    by lease."""

    holder: str | None = None
    others: Hold | None = None
    reserving: tuple[Lease, ...] = ()
    busy: Counter[str] = field(default_factory=Counter)
    dispatched: int = 0


class LeaseGate:
    """One resource's exclusive line and lease gate (installed on its scheduler)."""

    def __init__(self, name: str, scheduler: Scheduler, leases: LeaseTable) -> None:
        self.name = name
        self.scheduler = scheduler
        self.leases = leases
        self.line: list[Waiter] = []  # exclusive Acquires waiting, first asked first
        self.elsewhere: dict[str, tuple[float, float]] = {}  # cluster mode: other members' waiters, id -> (asked, until)
        self._change: asyncio.Future[None] | None = None  # resolved at the next change of leases or tasks
        self._verdict: tuple[tuple[float, int, int], Verdict] | None = None  # the last one, with when it was made

    # -- the gate --------------------------------------------------------------------------------------------------

    def hold(self, task: Task, now: float) -> Hold | None:
        verdict = self.verdict(now)
        if verdict.holder is not None and task.lease_id == verdict.holder:
            return None
        if verdict.others is not None:
            return verdict.others
        kept = self._kept(verdict, task.lease_id)
        if kept is None or self.scheduler.slots - verdict.dispatched > kept:
            return None
        if not kept:  # every slot is busy: taken ahead, it would take the next one to free, a kept one maybe
            return Hold(f"every slot of {self.name} is busy, and leases with min_slots keep the next ones that free "
                        "up; this task starts once a slot beyond theirs is free")
        return Hold(f"{kept} free slot(s) of {self.name} are kept for leases with min_slots; this task starts once a "
                    "slot beyond them is free")

    def verdict(self, now: float) -> Verdict:
        """What holds every task but an exclusive lease's at ``now``; worked out once for all the queued tasks one
        dispatch looks at (they are asked about at the same ``now``), again after any change."""
        made = now, self.scheduler.running, self.scheduler.queued  # a task taken or ended changes the counts too
        if self._verdict is not None and self._verdict[0] == made:
            return self._verdict[1]
        holder, others = None, None
        if (lease := self.leases.exclusive(self.name)) is not None:
            holder, others = lease.id, Hold(f"resource {self.name} is held by {holder_of(lease)}", lease.expires_at)
        elif waiting := len(self.line) + len(self._elsewhere(now)):
            others = Hold(f"an exclusive lease is waiting for the resource ({waiting} in line); tasks start again once "
                          "it is granted and ends")
        dispatched = self.scheduler.dispatched
        verdict = Verdict(holder, others, tuple(self.leases.reserving(self.name)),
                          Counter(task.lease_id for task in dispatched), len(dispatched))
        self._verdict = made, verdict
        return verdict

    def changes_at(self, now: float) -> float | None:
        expiries = [lease.expires_at for lease in self.leases.reserving(self.name)]
        expiries += [until for _, until in self.elsewhere.values() if until > now]
        if (holder := self.leases.exclusive(self.name)) is not None:
            expiries.append(holder.expires_at)
        return min(expiries, default=None)

    def _kept(self, verdict: Verdict, lease_id: str) -> int | None:
        """Slots the leases with min_slots other than ``lease_id`` keep free (each its min_slots less its tasks on the
        backend), leaving at least one slot to everyone else; None when no such lease lives."""
        reserving = [lease for lease in verdict.reserving if lease.id != lease_id]
        if not reserving:
            return None
        kept = sum(max(lease.min_slots - verdict.busy[lease.id], 0) for lease in reserving)
        return min(kept, max(self.scheduler.slots - 1, 0))

    def reserved(self) -> int:
        """Slots the live leases with min_slots ask for, together."""
        return sum(lease.min_slots for lease in self.leases.reserving(self.name))

    # -- the line of exclusive Acquires -----------------------------------------------------------------------------

    def changed(self) -> None:
        """Leases or the tasks on the backend changed: waiters look again, the scheduler re-checks its gates."""
        if self._change is not None and not self._change.done():
            self._change.set_result(None)
        self._change = None
        self._verdict = None
        self.scheduler.wake()

    async def acquire(self, waiter: Waiter, wait: float, grant: Callable[[], Awaitable[Lease | None]]) -> Lease:
        """Wait in line up to ``wait`` seconds and return the lease ``grant`` makes once ``waiter`` is first and the
        resource is free (``grant`` returns None when it finds the resource taken after all: the wait goes on);
        DeadlineExceeded naming its place in line and what it waits for when the wait runs out."""
        self.line.append(waiter)
        self.changed()
        deadline = time.monotonic() + wait
        try:
            while True:
                change = self._next_change()
                if self.first(waiter) and self.free():
                    lease = await grant()
                    if lease is not None:
                        return lease
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded(self.waiting(waiter, wait))
                await asyncio.wait([change], timeout=min(remaining, POLL))
        finally:
            self.line.remove(waiter)
            self.changed()

    def first(self, waiter: Waiter) -> bool:
        """Whether ``waiter`` is first in line, other members' waiters included."""
        return self.line[0] is waiter and all(turn > waiter.turn for turn in self._elsewhere(time.time()))

    def mirror(self, waits: list[tuple[str, float, float]]) -> None:
        """Take the exclusive Acquires waiting on every member as the store holds them: (id, asked at, until)."""
        here = {waiter.id for waiter in self.line}
        self.elsewhere = {wait_id: (asked, until) for wait_id, asked, until in waits if wait_id not in here}
        self.changed()

    def waiters(self) -> int:
        """Exclusive Acquires waiting for the resource, on any member."""
        return len(self.line) + len(self._elsewhere(time.time()))

    def _elsewhere(self, now: float) -> list[tuple[float, str]]:
        """The turns of the waiters on other members whose wait has not run out. A waiter of this member is never one
        of them, even when the store's notice of it came before it joined the line here (it is stored first)."""
        here = {waiter.id for waiter in self.line}
        return [(asked, wait_id) for wait_id, (asked, until) in self.elsewhere.items()
                if until > now and wait_id not in here]

    def free(self) -> bool:
        """Whether an exclusive lease may be granted now: none is live and no task is on the backend."""
        return self.leases.exclusive(self.name) is None and not self.scheduler.dispatched

    def waiting(self, waiter: Waiter, wait: float) -> str:
        """Why ``waiter`` is not granted yet: its place in line and what it waits for."""
        place = self.line.index(waiter) + 1 + sum(turn < waiter.turn for turn in self._elsewhere(time.time()))
        reasons = []
        if (holder := self.leases.exclusive(self.name)) is not None:
            reasons.append(f"the resource is held by {holder_of(holder)} until {clock(holder.expires_at)}")
        if place > 1:
            reasons.append(f"{place - 1} exclusive Acquire(s) ahead in line")
        if running := self.scheduler.dispatched:
            ends = self._expected_end(running)
            reasons.append(f"{len(running)} task(s) of other jobs still running, " +
                           (f"expected to end by {clock(ends)}" if ends is not None else "end not known yet"))
        return (f"{ordinal(place)} in line for an exclusive lease on {self.name} after waiting {wait:g} s; "
                f"{'; '.join(reasons) or 'the resource was being freed'}; retry with a longer wait, or acquire a "
                "shared lease")

    def _expected_end(self, running: list[Task]) -> float | None:
        """When the last of ``running`` is expected to end, from the recent run time; None when not known."""
        if self.scheduler.run_seconds is None:
            return None
        now = time.time()
        return max(max((task.view.started_at or now) + self.scheduler.run_seconds, now) for task in running)

    def _next_change(self) -> asyncio.Future[None]:
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        return self._change


def holder_of(lease: Lease) -> str:
    """Whose exclusive lease ``lease`` is, for a person."""
    if lease.slurm_job_id:
        return f"the exclusive lease of Slurm job {lease.slurm_job_id} (user {lease.owner})"
    return f"the exclusive lease of user {lease.owner}"


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def clock(seconds: float) -> str:
    """Epoch ``seconds`` as a UTC time of day (with the date when not today)."""
    at, now = time.gmtime(seconds), time.gmtime()
    return time.strftime("%H:%M:%S UTC" if at[:3] == now[:3] else "%Y-%m-%d %H:%M:%S UTC", at)
