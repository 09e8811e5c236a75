"""The lease gate at core level, with a noop backend whose jobs end when the test says and which takes the next job
ahead of a free slot as IBM's does: a slot kept by min_slots is never given to another task, even one taken ahead."""

from __future__ import annotations

import asyncio

from test_fairness import broker_with, paused, resume

from qrmid.backends import noop
from qrmid.backends.base import JobState, JobStatus
from qrmid.backends.payloads import Payload, PulserSequence
from qrmid.core.broker import Broker
from qrmid.core.exclusive import Waiter
from qrmid.core.leases import Lease, LeaseMode
from qrmid.core.tasks import Task, TaskState

PAYLOAD = PulserSequence(sequence="{}", job_runs=1)


class Staging(noop.Noop):
    """Stages the next job while every slot is busy; each job runs until the test ends it."""

    stages_ahead = True

    def __init__(self, slots: int) -> None:
        super().__init__(noop.Settings(type="noop", name="staging", slots=slots))
        self.order: list[str] = []
        self.staged: list[str] = []
        self.ends: dict[str, asyncio.Event] = {}

    async def stage(self, task_id: str, payload: Payload) -> None:
        self.staged.append(task_id)

    async def submit(self, task_id: str, payload: Payload) -> str:
        self.order.append(task_id)
        self.ends[task_id] = asyncio.Event()
        return task_id

    async def wait(self, ref: str, timeout: float) -> JobStatus:
        await self.ends[ref].wait()
        return JobStatus(JobState.COMPLETED)


async def settled() -> None:
    await asyncio.sleep(0.2)


async def test_a_slot_kept_for_a_lease_is_not_taken_by_a_task_staged_ahead_while_every_slot_was_busy() -> None:
    adapter = Staging(slots=2)
    broker = broker_with(adapter)
    broker.resource("r").min_slots_cap = 1
    scheduler = await paused(broker)
    lease = broker.acquire("r", "alice", min_slots=1)
    bulk = [Task(resource="r", owner="bob", payload=PAYLOAD) for _ in range(3)]
    interactive = [Task(resource="r", owner="alice", payload=PAYLOAD, lease_id=lease.id) for _ in range(2)]
    for task in [*bulk, interactive[0]]:
        scheduler.enqueue(task)
    resume(scheduler)
    await settled()
    assert adapter.order == [bulk[0].id, interactive[0].id], "one slot for others, the kept one for the lease"
    assert adapter.staged == [], "nothing of others is taken ahead while every slot is busy"
    held = scheduler.hold(bulk[1])
    assert held is not None and held.reason.startswith("every slot of r is busy, and leases with min_slots keep")
    adapter.ends[interactive[0].id].set()
    await settled()
    assert adapter.order == [bulk[0].id, interactive[0].id], "the freed kept slot waits for the lease's next task"
    held = scheduler.hold(bulk[1])
    assert held is not None and held.reason.startswith("1 free slot(s) of r are kept for leases with min_slots")
    scheduler.enqueue(interactive[1])
    await settled()
    assert adapter.order[-1] == interactive[1].id, "the lease's next task took its slot at once"
    adapter.ends[bulk[0].id].set()
    await settled()
    assert adapter.order[-1] == bulk[1].id, "others go on in the slots beyond the kept one"
    assert bulk[2].state is TaskState.QUEUED
    for event in adapter.ends.values():
        event.set()
    await broker.stop(grace=1)


async def test_a_waiter_mirrored_from_the_store_before_it_joined_the_line_is_still_first_here() -> None:
    broker = broker_with(Staging(slots=2))
    await broker.start()
    gate = broker.lease_gates["r"]
    waiter = Waiter("alice", "7")
    gate.mirror([(waiter.id, waiter.asked_at, waiter.asked_at + 30)])  # the store's notice came first
    granted = await asyncio.wait_for(gate.acquire(waiter, 5, lambda: _lease(broker)), 2)  # not after its wait
    assert granted.owner == "alice" and granted.mode is LeaseMode.EXCLUSIVE
    await broker.stop(grace=1)


async def _lease(broker: Broker) -> Lease:
    return broker.leases.grant("r", "alice", "7", mode=LeaseMode.EXCLUSIVE)
