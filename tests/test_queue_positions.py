"""Queue positions counted for one task agree with the taking order worked out in full, and with what ``pop`` takes.

Random sequences of submissions (some created before tasks already queued, as a cluster member may learn of them),
dispatches, refusals put back, cancellations, ends (which charge usage), clock steps and new run times, over owners
sharing accounts, priority classes and shot counts. After each step every queued task's position, counted on its own
and read from the whole order, is compared with a plain simulation of the fair-share picks written here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterable
from types import SimpleNamespace
from unittest import mock

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_fairness import start_request, two_users

from qrmid.backends.payloads import PulserSequence
from qrmid.core.queue import NOMINAL_SECONDS, UNITS, FairQueue, SchedulingPolicy
from qrmid.core.tasks import Task, TaskState
from qrmid.core.usage import UsageLedger, UsageWeights
from qrmid.v1 import quantum_resources_pb2 as pb

# no shrinking, which is slow here: a failure's report names every draw
PROPERTY = settings(derandomize=True, max_examples=150, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow])
OWNERS = {"ann": "", "bob": "", "cy": "lab", "dee": "lab", "eve": "team"}  # owner -> account ('' : their own)
CLASSES = ("", "interactive", "low")
WEIGHTS = [UsageWeights(qpu_second=1.0, half_life=60.0), UsageWeights(qpu_second=0.37, shot=0.001, half_life=30.0),
           UsageWeights(qpu_second=0.0, shot=1.0, half_life=600.0), UsageWeights(qpu_second=2.5, shot=0.25)]


class Model:
    """The queue as this test sees it, and the taking order it implies, simulated pick by pick."""

    def __init__(self, queue: FairQueue, clock: list[float]) -> None:
        self.queue = queue
        self.clock = clock
        self.stamp = clock[0]  # when the queue last changed: positions are scored as of then
        self.expected: float | None = None
        self.front: dict[str, list[Task]] = {cls: [] for cls in queue.policy.class_names}
        self.lines: dict[str, list[Task]] = {cls: [] for cls in queue.policy.class_names}
        self.dispatched: dict[Task, int] = {}  # task -> its charge, in UNITS

    def changed(self) -> None:
        self.stamp = self.clock[0]

    def step(self) -> int:
        seconds = NOMINAL_SECONDS if self.expected is None else self.expected
        return max(round(self.queue.policy.weights.qpu_second * seconds * UNITS), 1)

    def charge(self, task: Task) -> int:
        return self.step() + round(self.queue.policy.weights.shot * task.shots * UNITS)

    def order(self) -> list[Task]:
        """Class by class, as ``pop`` goes: put-back tasks, then repeatedly the next task of the account with the
        least score; each task taken adds its charge to its account's score."""
        order: list[Task] = []
        charges: dict[str, int] = {}
        for task, units in self.dispatched.items():
            charges[account(task)] = charges.get(account(task), 0) + units
        for cls in self.queue.policy.class_names:
            for task in self.front[cls]:
                order.append(task)
                charges[account(task)] = charges.get(account(task), 0) + self.charge(task)
            lines: dict[str, list[Task]] = {}
            for task in sorted(self.lines[cls], key=arrival):
                lines.setdefault(account(task), []).append(task)
            while lines:
                name = min(lines, key=lambda name: (self.queue.ledger.usage(name, self.stamp)
                                                     + charges.get(name, 0) / UNITS, arrival(lines[name][0])))
                task = lines[name].pop(0)
                order.append(task)
                charges[name] = charges.get(name, 0) + self.charge(task)
                if not lines[name]:
                    del lines[name]
        return order


def account(task: Task) -> str:
    return task.account or task.owner


def names(tasks: Iterable[Task]) -> list[str]:
    """Tasks as short names, for a readable failure."""
    return [f"{task.owner}:{task.priority or 'production'}:{task.shots}:{task.id[:6]}" for task in tasks]


def arrival(task: Task) -> tuple[float, str]:
    return task.history[0].created_at, task.id


def new_task(owner: str, priority: str, shots: int, created: float) -> Task:
    task = Task(resource="r", owner=owner, payload=PulserSequence("{}", max(shots, 1)), priority=priority,
                account=OWNERS[owner], shots=shots)
    task.history[0] = dataclasses.replace(task.history[0], created_at=created)
    return task


OPERATIONS = st.sampled_from(["push", "push", "push", "push", "pop", "pop", "refuse", "cancel", "finish", "tick",
                              "expect"])


@PROPERTY
@given(st.data(), st.sampled_from(WEIGHTS), st.sampled_from([0, 0, 1, 2]))
def test_counted_positions_match_the_simulated_taking_order(data: st.DataObject, weights: UsageWeights,
                                                             running_limit: int) -> None:
    clock = [1000.0]
    # a task's times by the test's clock, not the machine's: the charge of an end, which orders the queue, is then the
    # same when the example is replayed
    with mock.patch("qrmid.core.tasks.time", SimpleNamespace(time=lambda: clock[0])):
        check_positions(data, weights, running_limit, clock)


def check_positions(data: st.DataObject, weights: UsageWeights, running_limit: int, clock: list[float]) -> None:
    ledger = UsageLedger(weights, clock=lambda: clock[0])
    for name, seconds in zip(("ann", "lab", "team"), data.draw(st.lists(st.floats(0, 5), min_size=3, max_size=3))):
        ledger.charge(name, seconds, 0)  # usage from before
    queue = FairQueue(SchedulingPolicy(weights=weights, max_running_per_owner=running_limit), ledger)
    model = Model(queue, clock)
    created = itertools.count(1)
    for _ in range(data.draw(st.integers(20, 80))):
        operation = data.draw(OPERATIONS)
        queued = [task for cls in queue.policy.class_names for task in model.lines[cls] + model.front[cls]]
        if operation == "push":
            owner = data.draw(st.sampled_from(sorted(OWNERS)))
            late = data.draw(st.booleans())  # created a while ago: it goes before some queued tasks of its account
            task = new_task(owner, data.draw(st.sampled_from(CLASSES)), data.draw(st.sampled_from([0, 1, 100, 4096])),
                            next(created) - (data.draw(st.integers(1, 20)) if late else 0) + 0.5 * late)
            queue.push(task)
            model.lines[queue.policy.resolve(task.priority, admin=True)].append(task)
        elif operation in ("pop", "refuse") and queue.ready():
            task = queue.pop()
            cls = queue.policy.resolve(task.priority, admin=True)
            (model.front[cls] if task in model.front[cls] else model.lines[cls]).remove(task)
            model.dispatched[task] = model.charge(task)
            if operation == "refuse":
                queue.push_front(task)
                del model.dispatched[task]
                model.front[cls].insert(0, task)
        elif operation == "cancel" and queued:
            task = data.draw(st.sampled_from(queued))
            queue.remove(task)
            cls = queue.policy.resolve(task.priority, admin=True)
            (model.front[cls] if task in model.front[cls] else model.lines[cls]).remove(task)
        elif operation == "finish" and model.dispatched:
            task = data.draw(st.sampled_from(list(model.dispatched)))
            task.transition(TaskState.RUNNING)
            task.transition(data.draw(st.sampled_from([TaskState.COMPLETED, TaskState.FAILED])))
            queue.finished(task)
            del model.dispatched[task]
        elif operation == "tick":
            clock[0] += data.draw(st.sampled_from([0.001, 1.0, 45.0]))
            continue  # the queue has not changed: positions stay scored as of its last change
        elif operation == "expect":
            before = model.step()
            model.expected = queue.expected_seconds = data.draw(st.sampled_from([1e-9, 0.01, 0.5, 1.0, 7.25]))
            if model.step() == before:
                continue
        else:
            continue
        model.changed()
        expected = model.order()
        assert names(queue) == names(expected)
        assert [queue._place(task) for task in expected] == list(range(1, len(expected) + 1))
        if expected:
            task = data.draw(st.sampled_from(expected))
            assert queue.position(task) == expected.index(task) + 1
    if not running_limit:  # what pop takes, one by one, is the taking order as of now
        model.changed()
        expected = model.order()
        assert names(queue.pop() for _ in expected) == names(expected) and not queue


def test_positions_asked_one_by_one_and_all_at_once_agree_in_a_deep_queue() -> None:
    """10,000 tasks of 7 accounts: every position, asked after each change (counted) and all together (read from the
    whole order once), is the place ``pop`` takes the task at; and so it stays once 6,000 were taken."""
    queue = FairQueue(ledger=UsageLedger(clock=lambda: 0.0))
    tasks = [Task(resource="r", owner=f"user{index % 7}", payload=PulserSequence("{}", 1)) for index in range(10_000)]
    counted = []
    for task in tasks:
        queue.push(task)
        counted.append(queue.position(task))
    assert counted == list(range(1, 10_001)), "each new task is last: its account's next turn comes after all others"
    assert sorted(queue.position(task) for task in tasks) == list(range(1, 10_001))
    order = sorted(tasks, key={task: queue.position(task) for task in tasks}.__getitem__)
    assert [queue.pop() for _ in range(6000)] == order[:6000]
    assert [queue._place(task) for task in order[6000:]] == list(range(1, 4001)), "counted after the lines shrank"
    assert list(queue) == order[6000:]


async def test_start_task_answers_the_new_task_s_place_among_two_users_tasks() -> None:
    """Over a real socket: alice holds the only slot and queues three tasks to bob's one, with cancellations on
    the way. Each StartTask answers the place the fair share gives the new task (bob, having used nothing, goes
    before alice's same-numbered turn), and GetTask shows every queued task of both at its place."""
    async with two_users(slots=1, delay=86_400) as users:
        alice = users["alice"]
        holder = await alice.StartTask(start_request())
        while (await alice.GetTask(pb.GetTaskRequest(task_id=holder.id))).state != pb.TASK_STATE_RUNNING:
            await asyncio.sleep(0.01)
        queued: list[tuple[str, str]] = []  # (owner, task id) in the order they were queued
        for index in range(40):
            owner = "bob" if index % 4 == 3 else "alice"
            answer = await users[owner].StartTask(start_request())
            queued.append((owner, answer.id))
            assert answer.queue_position == fair_order(queued).index(answer.id) + 1
            if index % 9 == 8:  # cancel one of alice's, from the middle of her line
                cancelled = [entry for entry in queued if entry[0] == "alice"][len(queued) // 8]
                await alice.StopTask(pb.StopTaskRequest(task_id=cancelled[1]))
                queued.remove(cancelled)
            expected = fair_order(queued)
            shown = {task_id: (await users[owner].GetTask(pb.GetTaskRequest(task_id=task_id))).queue_position
                     for owner, task_id in queued}
            assert shown == {task_id: place for place, task_id in enumerate(expected, 1)}


def fair_order(queued: list[tuple[str, str]]) -> list[str]:
    """The taking order of ``queued``: each task of one charge (the nominal second, as none has finished), alice
    charged one already for the task holding the slot; ties to the task queued first."""
    turns = {"alice": 1, "bob": 0}
    keyed = []
    for index, (owner, task_id) in enumerate(queued):
        keyed.append((turns[owner], index, task_id))
        turns[owner] += 1
    return [task_id for *_, task_id in sorted(keyed)]
