"""Gates hold queued tasks back beyond their place in line: the queue takes only admitted tasks, in fair order
among them; the scheduler dispatches nothing held, shows why, and re-checks when a gate says its verdicts change."""

from __future__ import annotations

import asyncio
import time

from test_fairness import Recording, broker_with, paused, resume

from qrmid.backends.payloads import PulserSequence
from qrmid.core.gates import Hold
from qrmid.core.queue import FairQueue
from qrmid.core.tasks import Task, TaskState

PAYLOAD = PulserSequence(sequence="{}", job_runs=10)


def task(owner: str, lease_id: str = "") -> Task:
    return Task(resource="r", owner=owner, payload=PAYLOAD, lease_id=lease_id)


def test_the_queue_takes_only_admitted_tasks_and_keeps_the_others_in_order() -> None:
    queue = FairQueue()
    alice = [task("alice") for _ in range(3)]
    bob = [task("bob", "L") for _ in range(2)]
    carol = [task("carol") for _ in range(2)]
    for item in [*alice, bob[0], *carol, bob[1]]:
        queue.push(item)
    taken = [queue.pop(lambda item: item.lease_id == "L") for _ in range(2)]
    assert taken == bob
    try:
        queue.pop(lambda item: item.lease_id == "L")
    except IndexError:
        pass
    else:
        raise AssertionError("a queue with no admitted task gave one")
    assert [queue.position(item) for item in [*alice, *carol]] == [1, 3, 5, 2, 4]
    assert [queue.pop() for _ in range(5)] == [alice[0], carol[0], alice[1], carol[1], alice[2]]


def test_an_owner_whose_first_task_is_held_sends_its_next_admitted_one() -> None:
    queue = FairQueue()
    held, free = task("alice", "other-job"), task("alice", "L")
    queue.push(held)
    queue.push(free)
    assert queue.pop(lambda item: item.lease_id == "L") is free
    assert queue.pop() is held


class Window:
    """Holds every task but bob's until ``opens``."""

    def __init__(self, opens: float) -> None:
        self.opens = opens

    def hold(self, task: Task, now: float) -> Hold | None:
        if task.owner == "bob" or now >= self.opens:
            return None
        return Hold("reserved for bob", self.opens)

    def changes_at(self, now: float) -> float | None:
        return self.opens if now < self.opens else None


async def test_the_scheduler_dispatches_held_tasks_once_the_gate_opens_and_explains_the_wait() -> None:
    adapter = Recording(slots=2, delay=0.0)
    broker = broker_with(adapter)
    scheduler = await paused(broker)
    scheduler.run_seconds = 0.01
    opens = time.time() + 0.6
    scheduler.gates.append(Window(opens))
    alice, bob = task("alice"), task("bob")
    for item in (alice, bob):
        scheduler.enqueue(item)
    assert scheduler.hold(alice) == Hold("reserved for bob", opens)
    assert scheduler.hold(bob) is None
    resume(scheduler)
    estimate = scheduler.estimated_start(alice)
    assert estimate is not None and estimate >= opens, "a held task is not expected to start before its hold ends"
    await asyncio.sleep(0.3)
    assert adapter.order == [bob.id], "only the admitted task went while the gate held the other"
    assert alice.state is TaskState.QUEUED
    for _ in range(100):
        if alice.state.terminal:
            break
        await asyncio.sleep(0.02)
    assert adapter.order == [bob.id, alice.id], "the held task went when the gate opened, with no other wake"
    assert alice.view.started_at is not None and alice.view.started_at >= opens
    await broker.stop(grace=1)
