"""The core on its own: task state machine, scheduler slots and order, leases, the broker's rules."""

from __future__ import annotations

import asyncio
import time

import pytest

from qrmid.backends import noop
from qrmid.backends.base import Adapter, BackendState, BackendStatus, JobState, JobStatus
from qrmid.backends.payloads import Payload, PayloadKind, PulserSequence, QiskitPrimitive
from qrmid.core import errors
from qrmid.core.broker import Broker, Policy
from qrmid.core.leases import LeaseTable, new_token
from qrmid.core.resource import Resource, ResourceStatus
from qrmid.core.scheduler import Scheduler
from qrmid.core.tasks import Task, TaskState

PAYLOAD = PulserSequence(sequence="{}", job_runs=10)


class Recording(noop.Noop):
    """The noop backend, recording how many jobs it held at once and in which order they came."""

    def __init__(self, slots: int, delay: float) -> None:
        super().__init__(noop.Settings(type="noop", name="rec", slots=slots, delay_seconds=delay))
        self.order: list[str] = []
        self.held = 0
        self.most_held = 0

    async def submit(self, task_id: str, payload: Payload) -> str:
        self.order.append(task_id)
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        return await super().submit(task_id, payload)

    async def cleanup(self, ref: str) -> None:
        self.held -= 1
        await super().cleanup(ref)


class Failing(noop.Noop):
    """A backend whose jobs fail, or whose submissions raise."""

    def __init__(self, raise_on_submit: bool) -> None:
        super().__init__(noop.Settings(type="noop", name="bad"))
        self.raise_on_submit = raise_on_submit

    async def submit(self, task_id: str, payload: Payload) -> str:
        if self.raise_on_submit:
            raise ConnectionError("backend unreachable")
        return await super().submit(task_id, payload)

    async def poll(self, ref: str) -> JobStatus:
        return JobStatus(JobState.FAILED, "reason code 5203: unknown instruction")


def broker_with(adapter: Adapter, queue_limit: int = 1000, **policy: object) -> Broker:
    scheduler = Scheduler("r", adapter, queue_limit=queue_limit, poll_interval=0.05)
    resource = Resource("r", "noop", adapter, scheduler, status_interval=60)
    return Broker([resource], LeaseTable(default_ttl=60, max_ttl=600), Policy(**policy))  # type: ignore[arg-type]


async def started(broker: Broker) -> Broker:
    await broker.start()
    return broker


async def test_task_state_machine_records_every_state_with_times() -> None:
    task = Task(resource="r", owner="u", payload=PAYLOAD)
    task.transition(TaskState.RUNNING)
    task.transition(TaskState.COMPLETED)
    states = [view.state for view in task.history]
    assert states == [TaskState.QUEUED, TaskState.RUNNING, TaskState.COMPLETED]
    final = task.view
    assert final.created_at <= final.started_at <= final.ended_at  # type: ignore[operator]
    with pytest.raises(errors.FailedPrecondition, match="cannot become running"):
        task.transition(TaskState.RUNNING)
    assert task.payload.sequence == "", "a finished task lets go of its payload text"


async def test_watch_yields_every_state_even_to_a_late_watcher() -> None:
    task = Task(resource="r", owner="u", payload=PAYLOAD)
    task.transition(TaskState.RUNNING)
    task.transition(TaskState.FAILED, "boom")
    seen = [view async for view in task.watch()]
    assert [v.state for v in seen] == [TaskState.QUEUED, TaskState.RUNNING, TaskState.FAILED]
    assert seen[-1].reason == "boom"


async def test_slots_are_never_exceeded_and_order_is_fifo() -> None:
    adapter = Recording(slots=3, delay=0.05)
    broker = await started(broker_with(adapter))
    tasks = [await broker.start_task("r", PAYLOAD, "u") for _ in range(30)]
    await asyncio.gather(*(task.wait() for task in tasks))
    await broker.stop(1)
    assert all(task.state is TaskState.COMPLETED for task in tasks)
    assert adapter.most_held == 3
    assert adapter.order == [task.id for task in tasks]


async def test_queue_positions_and_queue_limit() -> None:
    adapter = Recording(slots=1, delay=10)
    broker = await started(broker_with(adapter, queue_limit=3))
    first = await broker.start_task("r", PAYLOAD, "u")
    while first.state is not TaskState.RUNNING:
        await asyncio.sleep(0.01)
    queued = [await broker.start_task("r", PAYLOAD, "u") for _ in range(3)]
    assert [broker.queue_position(task) for task in queued] == [1, 2, 3]
    with pytest.raises(errors.ResourceExhausted, match="queue of resource 'r' is full \\(3 tasks waiting\\)"):
        await broker.start_task("r", PAYLOAD, "u")
    broker.stop_task(queued[0].id)
    assert [broker.queue_position(task) for task in queued[1:]] == [1, 2]
    await broker.stop(0)
    assert {task.state for task in [first, *queued]} == {TaskState.CANCELLED}


async def test_stopping_a_running_task_frees_its_slot() -> None:
    adapter = Recording(slots=1, delay=30)
    broker = await started(broker_with(adapter))
    long = await broker.start_task("r", PAYLOAD, "u")
    short = await broker.start_task("r", PAYLOAD, "u")
    while long.state is not TaskState.RUNNING:
        await asyncio.sleep(0.01)
    broker.stop_task(long.id)
    assert long.state is TaskState.CANCELLED and long.view.reason == "stopped by its owner"
    adapter.delay = 0
    assert (await asyncio.wait_for(short.wait(), 5)).state is TaskState.COMPLETED
    assert adapter.held == 0
    await broker.stop(1)


@pytest.mark.parametrize(("raise_on_submit", "reason"), [
    (False, "reason code 5203: unknown instruction"),
    (True, "backend error: backend unreachable"),
])
async def test_backend_failures_fail_the_task_not_the_scheduler(raise_on_submit: bool, reason: str) -> None:
    broker = await started(broker_with(Failing(raise_on_submit)))
    views = await asyncio.gather(*[(await broker.start_task("r", PAYLOAD, "u")).wait() for _ in range(3)])
    assert [(v.state, v.reason) for v in views] == [(TaskState.FAILED, reason)] * 3
    await broker.stop(1)


async def test_a_paused_backend_keeps_tasks_queued_until_online() -> None:
    class Pausable(noop.Noop):
        state = BackendState.PAUSED

        async def status(self) -> BackendStatus:
            return BackendStatus(self.state, "reserved")

    adapter = Pausable(noop.Settings(type="noop", name="p"))
    broker = await started(broker_with(adapter))
    task = await broker.start_task("r", PAYLOAD, "u")
    await asyncio.sleep(0.2)
    resource = broker.resource("r")
    assert task.state is TaskState.QUEUED
    assert (resource.view().status, resource.view().status_reason) == (ResourceStatus.PAUSED, "reserved")
    adapter.state = BackendState.ONLINE
    await resource.refresh()
    assert (await asyncio.wait_for(task.wait(), 5)).state is TaskState.COMPLETED
    await broker.stop(1)


async def test_broker_rejects_bad_requests_before_queueing() -> None:
    broker = await started(broker_with(Recording(slots=1, delay=0), max_payload_bytes=2048))
    with pytest.raises(errors.NotFound, match="no resource named 'nope' \\(known: r\\)"):
        await broker.start_task("nope", PAYLOAD, "u")
    with pytest.raises(errors.InvalidArgument, match="payload is 4096 bytes; the limit is 2048"):
        await broker.start_task("r", PulserSequence("x" * 4096, 1), "u")
    with pytest.raises(errors.InvalidArgument, match="longer than 128"):
        await broker.start_task("r", PAYLOAD, "u", request_id="x" * 129)
    with pytest.raises(errors.NotFound, match="no task with id 'missing'"):
        broker.task("missing")
    assert broker.resource("r").scheduler.queued == 0
    await broker.stop(1)


async def test_payload_kind_must_match_the_resource() -> None:
    class QiskitOnly(noop.Noop):
        payload_kinds = frozenset({PayloadKind.QISKIT_PRIMITIVE})

    broker = await started(broker_with(QiskitOnly(noop.Settings(type="noop", name="q"))))
    with pytest.raises(errors.InvalidArgument, match="takes qiskit_primitive payloads, not pulser_sequence"):
        await broker.start_task("r", PAYLOAD, "u")
    assert (await (await broker.start_task("r", QiskitPrimitive("sampler", "{}"), "u")).wait()).state \
        is TaskState.COMPLETED
    await broker.stop(1)


async def test_request_id_makes_start_task_idempotent() -> None:
    broker = await started(broker_with(Recording(slots=1, delay=0)))
    first = await broker.start_task("r", PAYLOAD, "u", request_id="job-42-step-1")
    again = await broker.start_task("r", PAYLOAD, "u", request_id="job-42-step-1")
    other_user = await broker.start_task("r", PAYLOAD, "v", request_id="job-42-step-1")
    assert again is first and other_user is not first
    await broker.stop(1)


async def test_leases_gate_tasks_and_release_cancels_them() -> None:
    broker = await started(broker_with(Recording(slots=1, delay=30), require_lease=True))
    with pytest.raises(errors.InvalidArgument, match="needs a lease"):
        await broker.start_task("r", PAYLOAD, "alice")
    lease = broker.acquire("r", "alice", slurm_job_id="1234")
    with pytest.raises(errors.PermissionDenied, match="belongs to another user"):
        await broker.start_task("r", PAYLOAD, "bob", lease_token=lease.token)
    with pytest.raises(errors.NotFound, match="unknown lease token"):
        await broker.start_task("r", PAYLOAD, "alice", lease_token="forged")
    tasks = [await broker.start_task("r", PAYLOAD, "alice", lease_token=lease.token) for _ in range(2)]
    assert {(t.view.lease_id, t.view.slurm_job_id) for t in tasks} == {(lease.id, "1234")}
    released, cancelled = await broker.release(lease.token, "alice")
    assert released.id == lease.id and cancelled == 2
    assert {t.view.reason for t in tasks} == {"its lease was released"}
    with pytest.raises(errors.NotFound):
        await broker.release(lease.token, "alice")
    await broker.stop(1)


async def test_expired_leases_end_and_cancel_their_tasks() -> None:
    broker = broker_with(Recording(slots=1, delay=30), lease_check_interval=0.05)
    await broker.start()
    lease = broker.acquire("r", "alice", ttl=0.2)
    task = await broker.start_task("r", PAYLOAD, "alice", lease_token=lease.token)
    view = await asyncio.wait_for(task.wait(), 5)
    assert (view.state, view.reason) == (TaskState.CANCELLED, "its lease expired")
    assert broker.leases.live() == []
    await broker.stop(1)


async def test_lease_limit_and_ttl_cap() -> None:
    broker = broker_with(Recording(slots=1, delay=0))
    broker.resource("r").max_leases = 1
    lease = broker.acquire("r", "alice", ttl=10**9)
    assert lease.expires_at - time.time() <= 600
    with pytest.raises(errors.ResourceExhausted, match="maximum of 1 leases"):
        broker.acquire("r", "bob")


async def test_finished_tasks_are_retained_up_to_the_limit() -> None:
    broker = await started(broker_with(Recording(slots=4, delay=0), retain_tasks=5))
    tasks = [await broker.start_task("r", PAYLOAD, "u") for _ in range(12)]
    await asyncio.gather(*(t.wait() for t in tasks))
    await broker.stop(1)  # every slot released, every task recorded as finished
    assert [_known(broker, t.id) for t in tasks] == [False] * 7 + [True] * 5


def _known(broker: Broker, task_id: str) -> bool:
    try:
        broker.task(task_id)
    except errors.NotFound:
        return False
    return True


async def test_shutdown_lets_running_tasks_finish_and_cancels_queued_ones() -> None:
    adapter = Recording(slots=1, delay=0.3)
    broker = await started(broker_with(adapter))
    running = await broker.start_task("r", PAYLOAD, "u")
    queued = await broker.start_task("r", PAYLOAD, "u")
    while running.state is not TaskState.RUNNING:
        await asyncio.sleep(0.01)
    await broker.stop(grace=5)
    assert running.state is TaskState.COMPLETED
    assert (queued.state, queued.view.reason) == (TaskState.CANCELLED, "the daemon shut down")
    with pytest.raises(errors.Unavailable, match="shutting down"):
        await broker.start_task("r", PAYLOAD, "u")


async def test_shutdown_cancels_running_tasks_past_the_grace_period() -> None:
    adapter = Recording(slots=1, delay=60)
    broker = await started(broker_with(adapter))
    task = await broker.start_task("r", PAYLOAD, "u")
    while task.state is not TaskState.RUNNING:
        await asyncio.sleep(0.01)
    await broker.stop(grace=0.1)
    assert task.state is TaskState.CANCELLED
    assert adapter.held == 0


def test_fair_queue_takes_owners_in_turn() -> None:
    from qrmid.core.queue import FairQueue

    queue = FairQueue()
    heavy = [Task(resource="r", owner="heavy", payload=PAYLOAD) for _ in range(1000)]
    light = [Task(resource="r", owner="light", payload=PAYLOAD) for _ in range(5)]
    for task in [*heavy, *light]:
        queue.push(task)
    assert [queue.position(task) for task in light] == [2, 4, 6, 8, 10]
    taken = [queue.pop() for _ in range(10)]
    assert [t.owner for t in taken] == ["heavy", "light"] * 5
    assert [t for t in taken if t.owner == "light"] == light, "each owner's own tasks stay in order"
    refused = queue.pop()
    queue.push_front(refused)
    assert queue.pop() is refused and len(queue) == 994


class Gated(Recording):
    """The recording backend, whose submissions wait while its gate is closed."""

    def __init__(self, slots: int, delay: float) -> None:
        super().__init__(slots, delay)
        self.gate = asyncio.Event()
        self.gate.set()

    async def submit(self, task_id: str, payload: Payload) -> str:
        await self.gate.wait()
        return await super().submit(task_id, payload)


async def test_a_heavy_user_does_not_starve_a_light_one() -> None:
    adapter = Gated(slots=2, delay=0.01)
    broker = await started(broker_with(adapter, queue_limit=10_000))
    heavy = [await broker.start_task("r", PAYLOAD, "heavy") for _ in range(200)]
    while sum(t.state is TaskState.COMPLETED for t in heavy) < 50:  # the heavy user has used the resource a while
        await asyncio.sleep(0.01)
    adapter.gate.clear()  # the light user's tasks all queue behind the heavy backlog before the next dispatch
    light = [await broker.start_task("r", PAYLOAD, "light") for _ in range(10)]
    before = len(adapter.order)
    adapter.gate.set()
    await asyncio.gather(*(t.wait() for t in light))
    after = adapter.order[before:]
    submitted = [after.index(t.id) for t in light]
    assert submitted == sorted(submitted), "the light user's tasks go first come, first served"
    # the heavy task already waiting at the gate may go first; then the light user has used nothing and goes ahead
    assert submitted[-1] < len(light) + 1, f"heavy tasks went between the light ones: {submitted}"
    await broker.stop(0)


def test_a_lease_token_is_never_read_as_a_command_line_option() -> None:
    tokens = [new_token() for _ in range(2000)]  # a URL-safe draw starts with '-' once in 64
    assert not [token for token in tokens if token.startswith("-")]
    assert len(set(tokens)) == len(tokens) and min(map(len, tokens)) >= 43


class Reattaching(noop.Noop):
    """A remote backend whose jobs outlive a change of dispatcher: ``attach`` finds each one, once let through."""

    remote = True

    def __init__(self) -> None:
        super().__init__(noop.Settings(type="noop", name="far", slots=4))
        self.asked: list[str] = []
        self.first_asked = asyncio.Event()
        self.through = asyncio.Event()

    async def attach(self, task_id: str, ref: str | None) -> str | None:
        self.asked.append(task_id)
        self.first_asked.set()
        await self.through.wait()
        self._due[task_id] = time.monotonic()  # its job has ended on the backend
        return task_id


async def test_a_dispatcher_elected_again_follows_every_task_left_to_it_while_it_takes_over() -> None:
    """Elected again after losing its hold, a member re-attaches the tasks left on the backend; a task that joins
    them while it does (its own follow from the dispatch it lost just ended, and left the task to the dispatcher) is
    re-attached too, not left running with nobody following it."""
    adapter = Reattaching()
    broker = broker_with(adapter)
    scheduler = broker.resources["r"].scheduler
    scheduler.step_down()
    left, joining = Task("r", "alice", PAYLOAD), Task("r", "bob", PAYLOAD)
    for task in (left, joining):
        task.transition(TaskState.RUNNING)
        task.remote_ref = task.id
    scheduler.mirrored(left)
    leading = asyncio.create_task(broker.lead("r", [], set(), set()))
    await asyncio.wait_for(adapter.first_asked.wait(), 10)
    scheduler.mirrored(joining)
    adapter.through.set()
    await asyncio.wait_for(leading, 10)
    assert adapter.asked == [left.id, joining.id]
    for task in (left, joining):
        async with asyncio.timeout(10):
            async for view in task.watch():
                last = view
        assert last.state is TaskState.COMPLETED, task
