"""The waiting line of one resource: strict priority classes, then fair share across accounts, then FIFO.

Within the highest class that has a task to dispatch, the next task comes from the account with the least
*score*: its recent usage of the resource (decayed, see :mod:`qrmid.core.usage`) plus the estimated cost of
its tasks dispatched and not yet finished. Each dispatch raises its account's score, so two accounts with
equal usage alternate, and an account with a thousand queued tasks does not shut out one with ten: the
newcomer, having used nothing, is served first until its score catches up. Ties go to the account whose
next task has waited longest. Within an account tasks go first come, first served, skipping an owner that
already has its maximum of tasks running.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from qrmid.core.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from qrmid.core.tasks import Task
from qrmid.core.usage import UsageLedger, UsageWeights, shots_used

LARGE_QUEUE = 1000  # above this many tasks, positions may come from an order up to STALE_SECONDS old
STALE_SECONDS = 0.5
MIN_CHARGE = 1e-6  # every dispatch costs something, so even free tasks alternate between accounts
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
    """The taking order as computed at queue version ``version``, at monotonic time ``made``."""

    version: int
    made: float
    tasks: list[Task]
    places: dict[Task, int]


@dataclass(slots=True)
class _Class:
    """The tasks of one priority class: put-back tasks first, then one line per account and owner."""

    front: deque[Task] = field(default_factory=deque)
    accounts: dict[str, dict[str, deque[Task]]] = field(default_factory=dict)


class FairQueue:
    """Tasks waiting for a slot, and the bookkeeping of those dispatched from it until they finish."""

    def __init__(self, policy: SchedulingPolicy | None = None, ledger: UsageLedger | None = None) -> None:
        self.policy = policy or SchedulingPolicy()
        self.ledger = ledger or UsageLedger(self.policy.weights)
        self.expected_seconds: float | None = None  # recent run time of one task, set by the scheduler
        self._classes = {cls.name: _Class() for cls in self.policy.classes}
        self._seq: dict[Task, Arrival] = {}
        self._queued = Counter[str]()  # owner -> tasks queued
        self._queued_bytes = Counter[str]()  # owner -> payload bytes queued
        self.total_bytes = 0  # payload bytes queued, all owners
        self._running = Counter[str]()  # owner -> tasks dispatched, not finished
        self._charges: dict[Task, float] = {}  # dispatched task -> what its dispatch added to its account
        self._account_charge: defaultdict[str, float] = defaultdict(float)  # account -> sum of its dispatched tasks' charges
        self._version = 0
        self._order = _Order(-1, 0.0, [], {})

    def __len__(self) -> int:
        return len(self._seq)

    def __bool__(self) -> bool:
        return bool(self._seq)

    def __contains__(self, task: object) -> bool:
        return task in self._seq

    def __iter__(self) -> Iterator[Task]:
        """Tasks in the order they would be taken, if no owner hit its running limit."""
        return iter(self._ordered().tasks)

    def queued_by(self, owner: str) -> int:
        return self._queued[owner]

    def bytes_queued_by(self, owner: str) -> int:
        return self._queued_bytes[owner]

    def score(self, account: str, now: float | None = None) -> float:
        """What ranks ``account``: its decayed usage plus the charges of its unfinished dispatched tasks."""
        return self.ledger.usage(account, now) + self._account_charge[account]

    def push(self, task: Task) -> None:
        """Queue in its owner's line by the time it was created (at the back, but for a task another cluster member
        took a moment earlier: every member orders the same tasks alike)."""
        line = self._class(task).accounts.setdefault(_account(task), {}).setdefault(task.owner, deque())
        key = _arrival(task)
        index = len(line)
        while index and self._seq[line[index - 1]] > key:
            index -= 1
        line.insert(index, task)
        self._added(task, key)

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

    def pop(self) -> Task:
        """Take the next task to dispatch and charge its account; IndexError when none may go now."""
        for cls in self._classes.values():
            task = self._take(cls)
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
            lines = cls.accounts[_account(task)]
            line = lines[task.owner]
            line.remove(task)
            if not line:
                del lines[task.owner]
                if not lines:
                    del cls.accounts[_account(task)]
        self._removed(task)

    def dispatched(self, task: Task) -> None:
        """Count a task running without having been taken from this queue (one adopted after a restart)."""
        if task not in self._charges:
            self._dispatch(task)
            self._version += 1

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

    def position(self, task: Task) -> int:
        """1-based place of ``task`` in the taking order; 0 when it is not queued. In a queue longer than
        LARGE_QUEUE the order is recomputed at most every STALE_SECONDS, so places may lag by that much."""
        if task not in self._seq:
            return 0
        order = self._order
        if order.version != self._version and not (
                len(self._seq) > LARGE_QUEUE and time.monotonic() - order.made < STALE_SECONDS and task in order.places):
            order = self._ordered()
        return order.places[task]

    def _class(self, task: Task) -> _Class:
        return self._classes.get(task.priority) or self._classes[self.policy.default_class]

    def _eligible(self, owner: str) -> bool:
        limit = self.policy.max_running_per_owner
        return not limit or self._running[owner] < limit

    def _cost(self, task: Task) -> float:
        seconds = NOMINAL_SECONDS if self.expected_seconds is None else self.expected_seconds
        return max(self.policy.weights.cost(seconds, task.shots), MIN_CHARGE)

    def _take(self, cls: _Class) -> Task | None:
        """Remove and return the task ``cls`` dispatches next, or None."""
        for task in cls.front:
            if self._eligible(task.owner):
                cls.front.remove(task)
                return task
        now = self.ledger.clock()
        best: tuple[float, Arrival, str, str] | None = None
        for account, lines in cls.accounts.items():
            heads = [(self._seq[line[0]], owner) for owner, line in lines.items() if self._eligible(owner)]
            if not heads:
                continue
            seq, owner = min(heads)
            key = (self.score(account, now), seq, account, owner)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        _, _, account, owner = best
        lines = cls.accounts[account]
        task = lines[owner].popleft()
        if not lines[owner]:
            del lines[owner]
            if not lines:
                del cls.accounts[account]
        return task

    def _added(self, task: Task, seq: Arrival) -> None:
        self._seq[task] = seq
        self._queued[task.owner] += 1
        self._queued_bytes[task.owner] += task.size
        self.total_bytes += task.size
        self._version += 1

    def _removed(self, task: Task) -> None:
        del self._seq[task]
        self._queued[task.owner] -= 1
        if not self._queued[task.owner]:
            del self._queued[task.owner]
            del self._queued_bytes[task.owner]
        else:
            self._queued_bytes[task.owner] -= task.size
        self.total_bytes -= task.size
        self._version += 1

    def _dispatch(self, task: Task) -> None:
        charge = self._cost(task)
        self._charges[task] = charge
        self._account_charge[_account(task)] += charge
        self._running[task.owner] += 1

    def _undispatch(self, task: Task) -> None:
        charge = self._charges.pop(task, None)
        if charge is None:
            return
        account = _account(task)
        self._account_charge[account] -= charge
        if self._account_charge[account] <= MIN_CHARGE / 2:
            del self._account_charge[account]
        self._running[task.owner] -= 1
        if not self._running[task.owner]:
            del self._running[task.owner]
        self._version += 1

    def _ordered(self) -> _Order:
        """The taking order and each task's place in it, recomputed only after the queue changed:
        O(n log a) for n tasks of a accounts."""
        if self._order.version == self._version:
            return self._order
        now = self.ledger.clock()
        order: list[Task] = []
        for cls in self._classes.values():
            order.extend(cls.front)
            heap: list[tuple[float, Arrival, str, Task, Iterator[Task]]] = []
            for account, lines in cls.accounts.items():
                tasks = iter(next(iter(lines.values())) if len(lines) == 1 else
                             heapq.merge(*lines.values(), key=self._seq.__getitem__))
                first = next(tasks)
                heap.append((self.score(account, now), self._seq[first], account, first, tasks))
            heapq.heapify(heap)
            while heap:
                score, _, account, task, tasks = heap[0]
                order.append(task)
                following = next(tasks, None)
                if following is None:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, (score + self._cost(task), self._seq[following], account, following, tasks))
        self._order = _Order(self._version, time.monotonic(), order,
                             {task: index for index, task in enumerate(order, 1)})
        return self._order


Arrival = tuple[float, str]  # when a task was created, and its id to break ties


def _arrival(task: Task) -> Arrival:
    return task.history[0].created_at, task.id


def _account(task: Task) -> str:
    return task.account or task.owner
