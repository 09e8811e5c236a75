"""Allocations: budgets of QPU-seconds and shots per account and period, on a resource or a group of resources.

An allocation charges the tasks of one account (the Slurm account of the task's lease, else its owner: the account
fair share charges) on its resources (every resource when it names none). Each period (a calendar day, week from
Monday, month from the 1st or year from January 1st, in the daemon's local time; or ``none``: never reset) the
account may use its budget; a task is charged what the fair-share ledger charges it (:mod:`qrmid.core.usage`): the
seconds from its start to its end and, when it completed, its shots.

StartTask asks ``admit`` first. Over a **hard** allocation the task is refused; over a **soft** one it is accepted
in the resource's lowest priority class, with a warning. A task is over when its account has nothing left, or
less than the task's estimate: its shots, and the resource's recent run time (``Scheduler.run_seconds``; 0 while
none has been measured). What is left counts the tasks accepted and not yet finished at their estimate, so parallel
StartTasks cannot all take the same remainder: shots never overshoot a hard budget; QPU-seconds overshoot it by at
most what the unfinished tasks run past their estimates.

Usage is held in memory, per account, resource and period: the ended tasks of the current periods as the journal
(or the cluster's store) held them at start, with what the store kept, summed by day, of the tasks its retention
dropped; plus every task that ended since, here or, in cluster mode, on another member (as its end is mirrored). ``admit`` is O(resources named by the account's allocations), with no I/O.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from qrmid.core.errors import InvalidArgument, NotFound, ResourceExhausted
from qrmid.core.events import Listener
from qrmid.core.tasks import Task
from qrmid.core.usage import shots_used

PERIODS = ("day", "week", "month", "year", "none")
LIMITS = ("hard", "soft")
MAX_QPU_SECONDS = 1e12  # the largest budget of QPU-seconds (about 31,700 years)
MAX_SHOTS = 10**15  # the largest budget of shots
MAX_ACCOUNT = 256  # characters of an account name
EVERY = ""  # the key of an account's usage on every resource together (no resource has an empty name)
REMEMBERED = 100_000  # ids of the last tasks charged, so a task whose end is seen twice is charged once


@dataclass(frozen=True, slots=True)
class Allocation:
    """A budget of ``qpu_seconds`` and/or ``shots`` (0: none of that kind) per ``period`` for ``account`` on
    ``resources`` (sorted; empty: every resource); ``limit`` is ``hard`` or ``soft``."""

    account: str
    resources: tuple[str, ...]
    limit: str
    qpu_seconds: float
    shots: int
    period: str

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        return self.account, self.resources

    @property
    def where(self) -> str:
        return where(self.resources)

    def covers(self, resource: str) -> bool:
        return not self.resources or resource in self.resources

    def describe(self) -> str:
        """E.g. ``hard allocation of account 'phys' on every resource (3600 QPU-seconds a month)``."""
        budgets = [f"{self.qpu_seconds:g} QPU-seconds" if self.qpu_seconds else "", f"{self.shots} shots"
                   if self.shots else ""]
        every = {"day": "a day", "week": "a week", "month": "a month", "year": "a year", "none": "in all"}[self.period]
        return (f"{self.limit} allocation of account {self.account!r} on {self.where} "
                f"({' and '.join(filter(None, budgets))} {every})")


def where(resources: tuple[str, ...]) -> str:
    """Resources as a person reads them: ``every resource``, ``resource A`` or ``resources A, B``."""
    if not resources:
        return "every resource"
    return ("resources " if len(resources) > 1 else "resource ") + ", ".join(resources)


def allocation(account: str, resources: Iterable[str], limit: str, qpu_seconds: float, shots: int, period: str,
               known: Iterable[str]) -> Allocation:
    """An allocation as an admin set it, checked: InvalidArgument saying what to fix. An empty ``limit`` is
    ``hard``, an empty ``period`` is ``month``; ``known``: the resources served."""
    if not account:
        raise InvalidArgument("allocation.account is empty: give the Slurm account, or the user name, to charge")
    if len(account) > MAX_ACCOUNT or not account.isprintable() or account != account.strip():
        raise InvalidArgument(f"allocation.account {account[:40]!r} is not an account name: at most {MAX_ACCOUNT} "
                              "printable characters, no leading or trailing space")
    limit, period = limit or "hard", period or "month"
    if limit not in LIMITS:
        raise InvalidArgument(f"allocation.limit {limit!r} is not one of: {', '.join(LIMITS)}")
    if period not in PERIODS:
        raise InvalidArgument(f"allocation.period {period!r} is not one of: {', '.join(PERIODS)} (calendar periods "
                              "in the daemon's local time; none never resets)")
    if not math.isfinite(qpu_seconds) or not 0 <= qpu_seconds <= MAX_QPU_SECONDS:
        raise InvalidArgument(f"allocation.qpu_seconds is {qpu_seconds}; give a budget from 0 (none) to "
                              f"{MAX_QPU_SECONDS:g} QPU-seconds")
    if not 0 <= shots <= MAX_SHOTS:
        raise InvalidArgument(f"allocation.shots is {shots}; give a budget from 0 (none) to {MAX_SHOTS} shots")
    if not qpu_seconds and not shots:
        raise InvalidArgument("the allocation has no budget: give qpu_seconds, shots, or both (above 0)")
    names = tuple(sorted(set(resources)))
    served = list(known)
    if unknown := [name for name in names if name not in served]:
        raise InvalidArgument(f"no resource named {', '.join(map(repr, unknown))} (known: {', '.join(served) or 'none'}"
                              "); name resources this daemon serves, or none for every resource")
    return Allocation(account, names, limit, float(qpu_seconds), int(shots), period)


def period_bounds(period: str, now: float) -> tuple[float, float | None]:
    """The start and end (epoch seconds) of the ``period`` holding ``now``, in local time: from midnight, Monday,
    the 1st of the month, January 1st; (-inf, None) for ``none``."""
    if period == "none":
        return -math.inf, None
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        start = day.replace(month=1, day=1)
        end = start.replace(year=start.year + 1)
    return start.timestamp(), end.timestamp()  # naive local times: DST is applied as of each


@dataclass(slots=True)
class _Amount:
    """QPU-seconds and shots."""

    seconds: float = 0.0
    shots: int = 0


@dataclass(slots=True)
class _Bucket:
    """What an account used on a resource in the period starting at ``start``."""

    start: float
    used: _Amount = field(default_factory=_Amount)


@dataclass(frozen=True, slots=True)
class _Held:
    """An accepted, unfinished task counted at its estimate."""

    account: str
    resource: str
    seconds: float
    shots: int


@dataclass(frozen=True, slots=True)
class Used:
    """Usage a store kept of tasks it no longer holds (past its retention): what ``account`` used on ``resource`` in
    tasks that ended at ``at`` (epoch seconds; the local midnight of their day when summed by day)."""

    account: str
    resource: str
    at: float
    seconds: float
    shots: int


@dataclass(frozen=True, slots=True)
class AllocationView:
    """An allocation with what its account used in the current period (ended tasks) and when that period ends."""

    allocation: Allocation
    used_seconds: float
    used_shots: int
    reset_at: float | None


class Allocations(Listener):
    """The allocations in force, the usage they are checked against, and the checks. Follows the core's events: a
    task's acceptance holds its estimate, its end charges its real usage. ``estimate(resource)``: the QPU-seconds a
    task of ``resource`` is expected to take (set by the broker); ``clock``: epoch seconds."""

    def __init__(self, events: Listener, clock: Callable[[], float] = time.time) -> None:
        self.events = events
        self.clock = clock
        self.estimate: Callable[[str], float] = lambda resource: 0.0
        self._by_account: dict[str, dict[tuple[str, ...], Allocation]] = {}
        self._used: dict[str, dict[str, dict[str, _Bucket]]] = {}  # account -> resource (or EVERY) -> period -> bucket
        self._held: dict[str, _Held] = {}  # task id -> its estimate
        self._holding: dict[str, dict[str, _Amount]] = {}  # account -> resource (or EVERY) -> unfinished tasks' hold
        self._charged: OrderedDict[str, None] = OrderedDict()
        self._bounds: dict[str, tuple[float, float | None]] = {}
        self._renew_at = -math.inf

    # -- admins --------------------------------------------------------------------------------------------------

    async def put(self, value: Allocation) -> AllocationView:
        """Set ``value`` (replacing the account's allocation on the same resources) once it is recorded; Unavailable
        when it cannot be (it is then in force until the daemon stops)."""
        self.events.writable()
        self.take(value)
        self.events.allocation_set(value)
        await self.events.durable()
        return self.view(value)

    async def delete(self, account: str, resources: Iterable[str]) -> AllocationView:
        """Remove ``account``'s allocation on ``resources`` once it is recorded; NotFound when there is none."""
        names = tuple(sorted(set(resources)))
        found = self._by_account.get(account, {}).get(names)
        if found is None:
            have = ", ".join(value.where for value in self._by_account.get(account, {}).values())
            raise NotFound(f"account {account!r} has no allocation on {where(names)}"
                           + (f" (it has one on {have})" if have else " (it has none)"))
        self.events.writable()
        view = self.view(found)
        self.drop(account, names)
        self.events.allocation_deleted(found)
        await self.events.durable()
        return view

    def take(self, value: Allocation) -> None:
        """Put ``value`` in force (as set, restored or mirrored)."""
        self._by_account.setdefault(value.account, {})[value.resources] = value

    def drop(self, account: str, resources: tuple[str, ...]) -> None:
        """Take ``account``'s allocation on ``resources`` out of force, if any."""
        owned = self._by_account.get(account, {})
        owned.pop(resources, None)
        if not owned:
            self._by_account.pop(account, None)

    def mirror(self, account: str, stored: Iterable[Allocation]) -> None:
        """Hold ``account``'s allocations as the store holds them (``stored``), from another member."""
        self._by_account.pop(account, None)
        for value in stored:
            self.take(value)

    def accounts(self) -> set[str]:
        """The accounts that have an allocation."""
        return set(self._by_account)

    def views(self, accounts: Iterable[str] | None = None) -> list[AllocationView]:
        """The allocations of ``accounts`` (None: all), by account then resources, with their usage."""
        names = sorted(self._by_account) if accounts is None else sorted(set(accounts) & set(self._by_account))
        return [self.view(value) for name in names for _, value in sorted(self._by_account[name].items())]

    def view(self, value: Allocation) -> AllocationView:
        used = self._used_by(value, self.clock())
        return AllocationView(value, used.seconds, used.shots, self._bounds[value.period][1])

    # -- StartTask ---------------------------------------------------------------------------------------------

    def admit(self, account: str, resource: str, shots: int) -> tuple[str, ...]:
        """Check a task of ``account`` on ``resource`` asking for ``shots`` against the allocations that charge it:
        ResourceExhausted over a hard one; the warnings of the soft ones it is over (the task then goes in the
        lowest priority class); () when it is within all of them."""
        owned = self._by_account.get(account)
        if not owned:
            return ()
        now = self.clock()
        seconds = self.estimate(resource)
        warnings = []
        for value in owned.values():
            if not value.covers(resource):
                continue
            short = self._short(value, now, seconds, shots)
            if short and value.limit == "hard":
                raise ResourceExhausted(f"{short}; StartTask is refused until then (`qrmid allocation` shows what "
                                        "is left; an admin may raise it)")
            if short:
                warnings.append(f"{short}: the task was queued in the lowest priority class")
        return tuple(warnings)

    def _short(self, value: Allocation, now: float, seconds: float, shots: int) -> str:
        """Why a task estimated at ``seconds`` and ``shots`` does not fit in what ``value`` has left; ''."""
        used, held = self._used_by(value, now), self._held_by(value)
        if value.shots and (left := value.shots - used.shots - held.shots) < max(shots, 1):
            waiting = f", {held.shots} shots held by unfinished tasks" if held.shots else ""
            return (f"the {value.describe()} has {max(left, 0)} shots left ({used.shots} used{waiting}) and the task "
                    f"asks for {shots}; {self._resets(value)}")
        left_s = value.qpu_seconds - used.seconds - held.seconds
        if value.qpu_seconds and (left_s <= 0 or left_s < seconds):
            waiting = f", {held.seconds:.1f} held by unfinished tasks" if held.seconds else ""
            estimate = f"is estimated at {seconds:.1f} (the resource's recent run time)" if seconds else \
                "has no estimate yet (no task of the resource has run)"
            return (f"the {value.describe()} has {max(left_s, 0.0):.1f} QPU-seconds left ({used.seconds:.1f} used"
                    f"{waiting}) and the task {estimate}; {self._resets(value)}")
        return ""

    def _resets(self, value: Allocation) -> str:
        """When ``value``'s period ends, in local time with its offset."""
        reset_at = self._bounds[value.period][1]
        if reset_at is None:
            return "it never resets"
        return f"it resets at {datetime.fromtimestamp(reset_at).astimezone().isoformat(timespec='seconds')}"

    def _used_by(self, value: Allocation, now: float) -> _Amount:
        """What ``value``'s account used on its resources in the current period: O(resources it names)."""
        self._renew(now)
        start = self._bounds[value.period][0]
        total = _Amount()
        used = self._used.get(value.account, {})
        for name in value.resources or (EVERY,):
            bucket = used.get(name, {}).get(value.period)
            if bucket is not None and bucket.start == start:
                total.seconds += bucket.used.seconds
                total.shots += bucket.used.shots
        return total

    def _held_by(self, value: Allocation) -> _Amount:
        """What the unfinished tasks of ``value``'s account hold on its resources: O(resources it names)."""
        total = _Amount()
        holding = self._holding.get(value.account, {})
        for name in value.resources or (EVERY,):
            if (amount := holding.get(name)) is not None:
                total.seconds += amount.seconds
                total.shots += amount.shots
        return total

    def _renew(self, now: float) -> None:
        """Work the periods' bounds out again once the earliest of them has ended."""
        if now < self._renew_at:
            return
        self._bounds = {period: period_bounds(period, now) for period in PERIODS}
        self._renew_at = min(end for _, end in self._bounds.values() if end is not None)

    # -- usage ---------------------------------------------------------------------------------------------------

    def restore(self, allocations: Iterable[Allocation], tasks: Iterable[Task], used: Iterable[Used] = ()) -> None:
        """Take the allocations and the tasks a store kept (at start): the ended ones charge the current periods, the
        unfinished ones hold their shots (their run time is not known yet); ``used``: the usage the store kept of the
        tasks it dropped."""
        for value in allocations:
            self.take(value)
        for past in used:
            self._add(past.account, past.resource, past.at, past.seconds, past.shots)
        for task in tasks:
            if task.state.terminal:
                self._charge(task)
            else:
                self._hold(task, 0.0)

    def task_queued(self, task: Task) -> None:
        self._hold(task, self.estimate(task.resource))

    def task_refused(self, task: Task) -> None:
        self._release(task.id)

    def task_changed(self, task: Task) -> None:
        if task.state.terminal:
            self._release(task.id)
            self._charge(task)

    def task_mirrored(self, task: Task) -> None:
        """A task another member took or ran: held while unfinished, charged when it ends."""
        if task.state.terminal:
            self.task_changed(task)
        elif task.id not in self._held and task.id not in self._charged:
            self._hold(task, self.estimate(task.resource))

    def _hold(self, task: Task, seconds: float) -> None:
        if task.id in self._held:
            return
        held = self._held[task.id] = _Held(_account(task), task.resource, seconds, task.shots)
        owned = self._holding.setdefault(held.account, {})
        for name in (held.resource, EVERY):
            amount = owned.setdefault(name, _Amount())
            amount.seconds += held.seconds
            amount.shots += held.shots

    def _release(self, task_id: str) -> None:
        held = self._held.pop(task_id, None)
        if held is None:
            return
        owned = self._holding[held.account]
        for name in (held.resource, EVERY):
            amount = owned[name]
            amount.seconds -= held.seconds
            amount.shots -= held.shots
            if not amount.shots and amount.seconds < 1e-9:
                del owned[name]
        if not owned:
            del self._holding[held.account]

    def _charge(self, task: Task) -> None:
        """Add an ended task's usage to each current period it ended in (once per task)."""
        if task.id in self._charged:
            return
        self._charged[task.id] = None
        if len(self._charged) > REMEMBERED:
            self._charged.popitem(last=False)
        view = task.view
        ended = view.ended_at or self.clock()
        seconds = max(ended - view.started_at, 0.0) if view.started_at is not None else 0.0
        self._add(_account(task), task.resource, ended, seconds, shots_used(task))

    def _add(self, account: str, resource: str, ended: float, seconds: float, shots: int) -> None:
        """Charge ``account`` on ``resource`` for usage that ended at ``ended``, in each current period it ended in."""
        if not seconds and not shots:
            return
        self._renew(self.clock())
        used = self._used.setdefault(account, {})
        for periods in (used.setdefault(resource, {}), used.setdefault(EVERY, {})):
            for period, (start, _) in self._bounds.items():
                if ended < start:
                    continue
                bucket = periods.get(period)
                if bucket is None or bucket.start != start:
                    bucket = periods[period] = _Bucket(start)
                bucket.used.seconds += seconds
                bucket.used.shots += shots


def _account(task: Task) -> str:
    return task.account or task.owner

