"""The waiting line of one resource: strict priority classes, then fair share across accounts, then FIFO.

Within the highest class that has a task to dispatch, the next task comes from the account with the least
*score*: its recent usage of the resource (decayed, see :mod:`qrmid.core.usage`) plus the estimated cost of
its tasks dispatched and not yet finished. Each dispatch raises its account's score, so two accounts with
equal usage alternate, and an account with a thousand queued tasks does not shut out one with ten: the
newcomer, having used nothing, is served first until its score catches up. Ties go to the account whose
next task has waited longest. Within an account tasks go first come, first served, skipping an owner that
already has its maximum of tasks running.

A task's queue position is its place in the *taking order*: the order ``pop`` would take every queued task in,
scored as of the queue's last change, with no owner at its running limit. Within a class, an account's j-th task
(by creation) is keyed by the account's score plus what the tasks it has taken before then are charged: its tasks
of higher classes, those put back, and its j earlier ones in the class. The class goes by key, ties to the task
created first. Charges are counted in whole millionths (:data:`UNITS`), so a key is the same number however it is
summed, and one task's position is counted without working out the whole order: a binary search of each other
account's keys, O(a log n) for a accounts and n tasks.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from qrmid.core.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from qrmid.core.tasks import Task
from qrmid.core.usage import UsageLedger, UsageWeights, shots_used

UNITS = 1_000_000  # charges are counted in millionths of usage, exactly; every dispatch costs at least one
NOMINAL_SECONDS = 1.0  # the run time assumed until one has been measured


@dataclass(frozen=True, slots=True)
class PriorityClass:
    """A priority class; ``admin_only`` classes are open to admins only."""

    name: str
    admin_only: bool = False


DEFAULT_CLASSES = (PriorityClass("interactive"), PriorityClass("production"), PriorityClass("low"))


@dataclass(frozen=True, slots=True)
class SchedulingPolicy:
    """The scheduling rules of one resource. A limit of 0 means no limit."""

    classes: tuple[PriorityClass, ...] = DEFAULT_CLASSES
    default_class: str = "production"
    weights: UsageWeights = field(default_factory=UsageWeights)
    max_queued_per_owner: int = 0
    max_running_per_owner: int = 0
    max_shots_per_task: int = 0

    def __post_init__(self) -> None:
        if self.default_class not in self.class_names:
            raise ValueError(f"default class {self.default_class!r} is not one of {', '.join(self.class_names)}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(cls.name for cls in self.classes)

    def resolve(self, name: str, admin: bool) -> str:
        """The class a caller asked for ('' for the default); InvalidArgument or PermissionDenied."""
        name = name or self.default_class
        for cls in self.classes:
            if cls.name == name:
                if cls.admin_only and not admin:
                    open_ = ", ".join(c.name for c in self.classes if not c.admin_only) or "none"
                    raise PermissionDenied(f"priority class {name!r} is for admins only; open classes: {open_}")
                return name
        raise InvalidArgument(f"unknown priority class {name!r}; classes: {', '.join(self.class_names)}")

    def check_shots(self, resource: str, shots: int) -> None:
        if self.max_shots_per_task and shots > self.max_shots_per_task:
            raise ResourceExhausted(f"the task asks for {shots} shots; resource {resource!r} takes at most "
                                    f"{self.max_shots_per_task} shots per task (the per-task limit)")


@dataclass(frozen=True, slots=True)
class _Order:
    """The whole taking order as computed at queue version ``version``."""

    version: int
    places: dict[Task, int]


@dataclass(slots=True)
class _Line:
    """One account's tasks in one priority class: a line per owner, for taking; and all of them by creation from
    ``head`` on, with the running sums of their shot charges (``sums[i]``: charges of ``tasks[:i]``, exact up to
    ``summed``), for positions."""

    owners: dict[str, deque[Task]] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    shots: list[int] = field(default_factory=list)  # each task's shot charge, in UNITS
    sums: list[int] = field(default_factory=lambda: [0])
    summed: int = 0
    head: int = 0

    def __len__(self) -> int:
        return len(self.tasks) - self.head

    def add(self, task: Task, arrival: Arrival, shots: int) -> None:
        """Queue ``task`` by its creation, in its owner's line and the account's."""
        line = self.owners.setdefault(task.owner, deque())
        index = len(line)
        while index and _arrival(line[index - 1]) > arrival:
            index -= 1
        line.insert(index, task)
        index = len(self.tasks)
        if index > self.head and self.arrivals[-1] > arrival:  # created before a task queued already
            index = bisect.bisect_left(self.arrivals, arrival, self.head)
        self.tasks.insert(index, task)
        self.arrivals.insert(index, arrival)
        self.shots.insert(index, shots)
        if self.summed == index:
            self.sums.append(self.sums[index] + shots)
            self.summed += 1
        else:
            self._resum(index)

    def discard(self, task: Task, arrival: Arrival) -> None:
        """Take ``task`` out of both lines."""
        line = self.owners[task.owner]
        if line[0] is task:
            line.popleft()
        elif line[-1] is task:
            line.pop()
        else:
            line.remove(task)
        if not line:
            del self.owners[task.owner]
        index = self.index(arrival) + self.head
        if index == self.head:
            self.head += 1
            if self.head >= 64 and 2 * self.head >= len(self.tasks):
                self._compact()
        else:
            del self.tasks[index], self.arrivals[index], self.shots[index]
            self._resum(index)

    def index(self, arrival: Arrival) -> int:
        """0-based place of the task created at ``arrival`` among the account's."""
        return bisect.bisect_left(self.arrivals, arrival, self.head) - self.head

    def charges(self) -> list[int]:
        """``sums``, brought up to date."""
        if self.summed < len(self.tasks):
            sums = itertools.accumulate(self.shots[self.summed:], initial=self.sums[self.summed])
            self.sums.extend(itertools.islice(sums, 1, None))  # its initial value is there already
            self.summed = len(self.tasks)
        return self.sums

    def _resum(self, index: int) -> None:
        """The sums from ``index`` on are to be worked out again."""
        if index < self.summed:
            self.summed = index
            del self.sums[index + 1:]

    def before(self, key: Key, usage: float, charge: int, step: int) -> int:
        """How many of the account's tasks are keyed below ``key``, the account's score being ``usage`` and
        ``charge``, each task costing ``step`` plus its shot charge."""
        sums, head, arrivals = self.charges(), self.head, self.arrivals
        low, high, offset = 0, len(self), charge - sums[head]
        if (usage + (offset + (high - 1) * step + sums[head + high - 1]) / UNITS, arrivals[head + high - 1]) < key:
            return high  # all of them: the usual answer for a task just queued
        while low < high:
            middle = (low + high) // 2
            if (usage + (offset + middle * step + sums[head + middle]) / UNITS, arrivals[head + middle]) < key:
                low = middle + 1
            else:
                high = middle
        return low

    def keyed(self, usage: float, charge: int, step: int, start: int = 0) -> Iterator[tuple[Key, Task]]:
        """Each of the account's tasks from the ``start``-th on, with its key, in order."""
        sums, head = self.charges(), self.head
        offset = charge - sums[head]
        for j in range(start, len(self)):
            index = head + j
            yield (usage + (offset + j * step + sums[index]) / UNITS, self.arrivals[index]), self.tasks[index]

    def charged(self, step: int) -> int:
        """What taking all the account's tasks charges it, in UNITS."""
        sums = self.charges()
        return len(self) * step + sums[len(self.tasks)] - sums[self.head]

    def _compact(self) -> None:
        """Forget the tasks taken from the head."""
        head = self.head
        del self.tasks[:head], self.arrivals[:head], self.shots[:head]
        if self.summed >= head:
            del self.sums[:head]
            self.summed -= head
        else:
            self.sums, self.summed = [0], 0
        self.head = 0


@dataclass(slots=True)
class _Class:
    """The tasks of one priority class: put-back tasks first, then one line per account."""

    front: deque[Task] = field(default_factory=deque)
    accounts: dict[str, _Line] = field(default_factory=dict)
    size: int = 0


class FairQueue:
    """Tasks waiting for a slot, and the bookkeeping of those dispatched from it until they finish."""

    def __init__(self, policy: SchedulingPolicy | None = None, ledger: UsageLedger | None = None) -> None:
        self.policy = policy or SchedulingPolicy()
        self.ledger = ledger or UsageLedger(self.policy.weights)
        self._expected: float | None = None
        self._classes = {cls.name: _Class() for cls in self.policy.classes}
        self._seq: dict[Task, Arrival] = {}
        self._queued = Counter[str]()  # owner -> tasks queued
        self._queued_bytes = Counter[str]()  # owner -> payload bytes queued
        self.total_bytes = 0  # payload bytes queued, all owners
        self._running = Counter[str]()  # owner -> tasks dispatched, not finished
        self._charges: dict[Task, int] = {}  # dispatched task -> what its dispatch added to its account, in UNITS
        self._account_charge = Counter[str]()  # account -> sum of its dispatched tasks' charges, in UNITS
        self._version = 0
        self._stamp = self.ledger.clock()  # when the queue last changed: the time positions are scored at
        self._order = _Order(-1, {})
        self._asked = (-1, 0)  # (version, positions asked at it)
        self._last: tuple[int, Task | None, int] = (-1, None, 0)  # (version, task, its position)

    def __len__(self) -> int:
        return len(self._seq)

    def __bool__(self) -> bool:
        return bool(self._seq)

    def __contains__(self, task: object) -> bool:
        return task in self._seq

    def __iter__(self) -> Iterator[Task]:
        """Tasks in the taking order."""
        return iter(self._ordered().places)

    @property
    def expected_seconds(self) -> float | None:
        """The recent run time of one task, set by the scheduler: what a dispatch is charged for."""
        return self._expected

    @expected_seconds.setter
    def expected_seconds(self, seconds: float | None) -> None:
        step = self._step()
        self._expected = seconds
        if self._step() != step:
            self._changed()

    def queued_by(self, owner: str) -> int:
        return self._queued[owner]

    def bytes_queued_by(self, owner: str) -> int:
        return self._queued_bytes[owner]

    def score(self, account: str, now: float | None = None) -> float:
        """What ranks ``account``: its decayed usage plus the charges of its unfinished dispatched tasks."""
        return self.ledger.usage(account, now) + self._account_charge[account] / UNITS

    def charge(self, task: Task) -> int:
        """What dispatching ``task`` now adds to its account's score, in UNITS: the expected run time's cost, at
        least one unit, plus its shots' cost."""
        return self._step() + self._shot_charge(task)

    def push(self, task: Task) -> None:
        """Queue in its owner's line by the time it was created (at the back, but for a task another cluster member
        took a moment earlier: every member orders the same tasks alike)."""
        cls = self._class(task)
        account = _account(task)
        line = cls.accounts.get(account)
        if line is None:
            line = cls.accounts[account] = _Line()
        arrival = _arrival(task)
        line.add(task, arrival, self._shot_charge(task))
        self._added(task, arrival)

    def push_front(self, task: Task) -> None:
        """Put back a task that was taken and refused: it is taken next (within its class), uncharged."""
        self._undispatch(task)
        self._class(task).front.appendleft(task)
        self._added(task, _arrival(task))

    def ready(self) -> bool:
        """Whether some queued task's owner is below its running limit."""
        limit = self.policy.max_running_per_owner
        if not limit:
            return bool(self._seq)
        return any(count and self._running[owner] < limit for owner, count in self._queued.items())

    def pop(self, admit: Admit | None = None) -> Task:
        """Take the next task to dispatch and charge its account; IndexError when none may go now. With ``admit``,
        only a task it admits is taken: an owner's first admitted task stands for the owner, the others wait."""
        for cls in self._classes.values():
            task = self._take(cls, admit)
            if task is not None:
                self._removed(task)
                self._dispatch(task)
                return task
        raise IndexError("no queued task may be dispatched now")

    def remove(self, task: Task) -> None:
        """Drop a queued task (cancelled)."""
        cls = self._class(task)
        if task in cls.front:
            cls.front.remove(task)
        else:
            self._discard(cls, task)
        self._removed(task)

    def dispatched(self, task: Task) -> None:
        """Count a task running without having been taken from this queue (one adopted after a restart)."""
        if task not in self._charges:
            self._dispatch(task)
            self._changed()

    def finished(self, task: Task) -> None:
        """A dispatched task ended: free its owner's running count and charge its real usage (QPU-seconds
        from its start to its end, and its shots if it completed) to its account. Nothing for a task never
        dispatched."""
        if task not in self._charges:
            return
        self._undispatch(task)
        self._charge(task)

    def restore_usage(self, task: Task) -> None:
        """Charge the usage of a task that finished before a restart (from the journal), decayed since."""
        self._charge(task, ago=time.time() - (task.view.ended_at or time.time()))

    def _charge(self, task: Task, ago: float = 0.0) -> None:
        view = task.view
        seconds = view.ended_at - view.started_at if view.started_at and view.ended_at else 0.0
        self.ledger.charge(_account(task), max(seconds, 0.0), shots_used(task), ago)
        self._changed()

    def position(self, task: Task) -> int:
        """1-based place of ``task`` in the taking order; 0 when it is not queued. Counted for this task alone,
        but once more positions are asked at one state of the queue than the whole order would cost (about
        n / (a log n) of them), the whole order is worked out and read from until the queue changes."""
        if task not in self._seq:
            return 0
        version, last, place = self._last
        if version == self._version and last is task:
            return place
        if self._order.version == self._version:
            return self._order.places[task]
        version, asked = self._asked
        asked = asked + 1 if version == self._version else 1
        self._asked = (self._version, asked)
        accounts = sum(len(cls.accounts) for cls in self._classes.values())
        if asked > 8 + len(self._seq) // (max(accounts, 1) * len(self._seq).bit_length()):
            return self._ordered().places[task]
        place = self._place(task)
        self._last = (self._version, task, place)
        return place

    def _place(self, task: Task) -> int:
        """``task``'s position, counted: the tasks of the classes before its own and those put back in it, then
        the tasks of its class keyed below it. Each account's score counts what taking its tasks before those
        lines charges it."""
        place, step = 1, self._step()
        cls = self._class(task)
        carried = Counter[str]()  # account -> charges of its tasks taken before cls's lines, in UNITS
        for other in self._classes.values():
            for queued in other.front:
                carried[_account(queued)] += self.charge(queued)
            if other is cls:
                break
            place += other.size
            for name, line in other.accounts.items():
                carried[name] += line.charged(step)
        if task in cls.front:
            return place + cls.front.index(task)
        place += len(cls.front)
        account = _account(task)
        line = cls.accounts[account]
        index = line.index(self._seq[task])
        usage, charge = self.ledger.usage(account, self._stamp), self._account_charge[account] + carried[account]
        key = next(line.keyed(usage, charge, step, index))[0]
        place += index
        for name, other_line in cls.accounts.items():
            if name != account:
                place += other_line.before(key, self.ledger.usage(name, self._stamp),
                                           self._account_charge[name] + carried[name], step)
        return place

    def _ordered(self) -> _Order:
        """The whole taking order, worked out again only after the queue changed: O(n log n) for n tasks."""
        if self._order.version == self._version:
            return self._order
        step = self._step()
        order: list[Task] = []
        carried = Counter[str]()  # account -> charges of its tasks taken before the lines at hand, in UNITS
        for cls in self._classes.values():
            order.extend(cls.front)
            for task in cls.front:
                carried[_account(task)] += self.charge(task)
            keyed = [item for account, line in cls.accounts.items() for item in line.keyed(
                self.ledger.usage(account, self._stamp), self._account_charge[account] + carried[account], step)]
            keyed.sort(key=lambda item: item[0])
            order.extend(task for _, task in keyed)
            for account, line in cls.accounts.items():
                carried[account] += line.charged(step)
        self._order = _Order(self._version, {task: place for place, task in enumerate(order, 1)})
        return self._order

    def _class(self, task: Task) -> _Class:
        return self._classes.get(task.priority) or self._classes[self.policy.default_class]

    def _eligible(self, owner: str) -> bool:
        limit = self.policy.max_running_per_owner
        return not limit or self._running[owner] < limit

    def _step(self) -> int:
        """What a dispatch is charged for its expected run time, in UNITS: at least one."""
        seconds = NOMINAL_SECONDS if self._expected is None else self._expected
        return max(round(self.policy.weights.qpu_second * seconds * UNITS), 1)

    def _shot_charge(self, task: Task) -> int:
        return round(self.policy.weights.shot * task.shots * UNITS)

    def _take(self, cls: _Class, admit: Admit | None) -> Task | None:
        """Remove and return the task ``cls`` dispatches next, or None."""
        for task in cls.front:
            if self._eligible(task.owner) and (admit is None or admit(task)):
                cls.front.remove(task)
                return task
        now = self.ledger.clock()
        best: tuple[float, Arrival, str, Task] | None = None
        for account, line in cls.accounts.items():
            heads = [(self._seq[first], first) for owner, owned in line.owners.items()
                     if self._eligible(owner) and (first := _first(owned, admit)) is not None]
            if not heads:
                continue
            seq, first = min(heads, key=lambda head: head[0])
            key = (self.score(account, now), seq, account, first)
            if best is None or key[:3] < best[:3]:
                best = key
        if best is None:
            return None
        task = best[3]
        self._discard(cls, task)
        return task

    def _discard(self, cls: _Class, task: Task) -> None:
        account = _account(task)
        line = cls.accounts[account]
        line.discard(task, self._seq[task])
        if not line:
            del cls.accounts[account]

    def _changed(self) -> None:
        self._version += 1
        self._stamp = self.ledger.clock()

    def _added(self, task: Task, seq: Arrival) -> None:
        self._seq[task] = seq
        self._class(task).size += 1
        self._queued[task.owner] += 1
        self._queued_bytes[task.owner] += task.size
        self.total_bytes += task.size
        self._changed()

    def _removed(self, task: Task) -> None:
        del self._seq[task]
        self._class(task).size -= 1
        self._queued[task.owner] -= 1
        if not self._queued[task.owner]:
            del self._queued[task.owner]
            del self._queued_bytes[task.owner]
        else:
            self._queued_bytes[task.owner] -= task.size
        self.total_bytes -= task.size
        self._changed()

    def _dispatch(self, task: Task) -> None:
        charge = self.charge(task)
        self._charges[task] = charge
        self._account_charge[_account(task)] += charge
        self._running[task.owner] += 1

    def _undispatch(self, task: Task) -> None:
        charge = self._charges.pop(task, None)
        if charge is None:
            return
        account = _account(task)
        self._account_charge[account] -= charge
        if not self._account_charge[account]:
            del self._account_charge[account]
        self._running[task.owner] -= 1
        if not self._running[task.owner]:
            del self._running[task.owner]
        self._changed()


Arrival = tuple[float, str]  # when a task was created, and its id to break ties
Key = tuple[float, Arrival]  # a queued task's place in the taking order of its class
Admit = Callable[[Task], bool]  # whether a queued task may be dispatched now


def _first(owned: deque[Task], admit: Admit | None) -> Task | None:
    """The first of an owner's queued tasks that ``admit`` lets go (the first of all without one)."""
    if admit is None:
        return owned[0]
    return next((task for task in owned if admit(task)), None)


def _arrival(task: Task) -> Arrival:
    return task.history[0].created_at, task.id


def _account(task: Task) -> str:
    return task.account or task.owner
