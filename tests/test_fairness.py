"""Fair scheduling: priority classes, fair share by decayed usage, per-user limits, queue position and ETA.

Core-level tests drive the real queue and scheduler with the noop backend; daemon-level ones run a real
daemon over a real socket with two token-authenticated users competing for one noop resource.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import grpc
import pytest
from daemons import config, running, short_dir
from pydantic import ValidationError

from qrmid.backends import noop
from qrmid.backends.base import Adapter
from qrmid.backends.payloads import Payload, PulserSequence
from qrmid.core import errors
from qrmid.core.broker import Broker, Policy
from qrmid.core.leases import LeaseTable
from qrmid.core.queue import FairQueue, PriorityClass, SchedulingPolicy
from qrmid.core.resource import Resource
from qrmid.core.scheduler import Scheduler
from qrmid.core.tasks import Task, TaskState
from qrmid.core.usage import UsageLedger, UsageWeights
from qrmid.daemon import build_broker
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

PAYLOAD = PulserSequence(sequence="{}", job_runs=10)


class Recording(noop.Noop):
    """The noop backend, recording the order tasks were submitted in and how many each owner held at once."""

    def __init__(self, slots: int, delay: float) -> None:
        super().__init__(noop.Settings(type="noop", name="rec", slots=slots, delay_seconds=delay))
        self.order: list[str] = []

    async def submit(self, task_id: str, payload: Payload) -> str:
        self.order.append(task_id)
        return await super().submit(task_id, payload)


def broker_with(adapter: Adapter, policy: SchedulingPolicy | None = None, queue_limit: int = 10_000) -> Broker:
    scheduler = Scheduler("r", adapter, queue_limit=queue_limit, poll_interval=0.05, policy=policy)
    resource = Resource("r", "noop", adapter, scheduler, status_interval=60)
    return Broker([resource], LeaseTable(default_ttl=60, max_ttl=600), Policy())


def task(owner: str, priority: str = "", shots: int = 0) -> Task:
    return Task(resource="r", owner=owner, payload=PAYLOAD, priority=priority, shots=shots)


async def paused(broker: Broker) -> Scheduler:
    """Start ``broker`` with dispatch held, so tasks can be queued before any is taken."""
    await broker.start()
    scheduler = broker.resource("r").scheduler
    scheduler.dispatching = False
    return scheduler


def resume(scheduler: Scheduler) -> None:
    scheduler.dispatching = True
    scheduler.wake()


# ---- the queue on its own -------------------------------------------------------------------------------


def test_equal_accounts_alternate_and_each_keeps_its_order() -> None:
    queue = FairQueue()
    heavy = [task("heavy") for _ in range(1000)]
    light = [task("light") for _ in range(10)]
    for item in [*heavy, *light]:
        queue.push(item)
    assert [queue.position(item) for item in light] == list(range(2, 21, 2))
    taken = [queue.pop() for _ in range(20)]
    assert [item.owner for item in taken] == ["heavy", "light"] * 10
    assert [item for item in taken if item.owner == "light"] == light
    assert [item for item in taken if item.owner == "heavy"] == heavy[:10]


def test_recent_usage_yields_to_a_newcomer_and_decays_away() -> None:
    now = [0.0]
    ledger = UsageLedger(UsageWeights(qpu_second=1.0, half_life=60.0), clock=lambda: now[0])
    queue = FairQueue(SchedulingPolicy(weights=ledger.weights), ledger)
    queue.expected_seconds = 1.0
    ledger.charge("heavy", 5.0, 0)  # five QPU-seconds used just now
    for owner in ["heavy"] * 20 + ["new"] * 20:
        queue.push(task(owner))
    first = [queue.pop().owner for _ in range(8)]
    assert first == ["new"] * 5 + ["heavy", "new", "heavy"], "the newcomer catches up, then they alternate"
    now[0] = 600.0  # ten half-lives later: 5 s of usage decays to 5/1024 s
    assert ledger.usage("heavy") == pytest.approx(5 / 1024)


def test_priority_classes_are_strict_and_fifo_within_an_account() -> None:
    queue = FairQueue()
    queue.ledger.charge("busy", 1000.0, 0)
    low = [task("idle", "low") for _ in range(3)]
    production = [task("idle", "production") for _ in range(3)]
    interactive = [task("busy", "interactive") for _ in range(3)]
    for item in [*low, *production, *interactive]:
        queue.push(item)
    assert list(queue) == [*interactive, *production, *low]
    assert [queue.pop() for _ in range(9)] == [*interactive, *production, *low]


def test_a_refused_task_is_put_back_first_and_uncharged() -> None:
    queue = FairQueue()
    for owner in ["a", "b"] * 3:
        queue.push(task(owner))
    refused = queue.pop()
    assert queue.score(refused.owner) > 0
    queue.push_front(refused)
    assert queue.score(refused.owner) == 0
    assert queue.position(refused) == 1 and queue.pop() is refused and len(queue) == 5


def test_positions_of_ten_thousand_tasks_follow_the_taking_order() -> None:
    queue = FairQueue()
    tasks = [task(f"user{index % 7}") for index in range(10_000)]
    for item in tasks:
        queue.push(item)
    positions = sorted(queue.position(item) for item in tasks)
    assert positions == list(range(1, 10_001))
    predicted = list(queue)[:50]
    assert [queue.pop() for _ in range(50)] == predicted


def test_running_limit_skips_an_owner_without_blocking_others() -> None:
    queue = FairQueue(SchedulingPolicy(max_running_per_owner=1))
    for owner in ["a", "a", "a", "b"]:
        queue.push(task(owner))
    first = queue.pop()
    second = queue.pop()
    assert (first.owner, second.owner) == ("a", "b")
    assert not queue.ready(), "a is at its limit and b has nothing left"
    with pytest.raises(IndexError):
        queue.pop()
    first.transition(TaskState.RUNNING)
    first.transition(TaskState.COMPLETED)
    queue.finished(first)
    assert queue.ready() and queue.pop().owner == "a"


def test_a_task_adopted_as_running_counts_toward_limits_and_usage() -> None:
    queue = FairQueue(SchedulingPolicy(max_running_per_owner=1))
    adopted = task("a")
    adopted.transition(TaskState.RUNNING)
    queue.dispatched(adopted)  # running since before a restart
    queue.push(task("a"))
    queue.push(task("b"))
    assert queue.pop().owner == "b" and not queue.ready()
    assert queue.score("a") == 1.0, "charged a nominal second until a run time is known"
    adopted.transition(TaskState.COMPLETED)
    queue.finished(adopted)
    assert queue.ready() and queue.score("a") < 1.0


def test_priority_class_names_and_admin_only_classes() -> None:
    policy = SchedulingPolicy(classes=(PriorityClass("interactive", admin_only=True), PriorityClass("production")),
                              default_class="production")
    assert policy.resolve("", admin=False) == "production"
    assert policy.resolve("interactive", admin=True) == "interactive"
    with pytest.raises(errors.PermissionDenied, match="'interactive' is for admins only; open classes: production"):
        policy.resolve("interactive", admin=False)
    with pytest.raises(errors.InvalidArgument, match="unknown priority class 'urgent'; classes: interactive, production"):
        policy.resolve("urgent", admin=True)


def test_config_sets_each_resources_policy() -> None:
    classes = [{"name": "interactive", "admin_only": True}, {"name": "production"}, {"name": "low"}]
    cfg = config([{"type": "noop", "name": "a", "max_running_per_owner": 2, "default_class": "low"},
                  {"type": "noop", "name": "b"}], scheduling={"classes": classes, "max_shots_per_task": 50})
    broker = build_broker(cfg)
    a, b = (broker.resource(name).scheduler.policy for name in "ab")
    assert (a.default_class, a.max_running_per_owner, a.max_shots_per_task) == ("low", 2, 50)
    assert (b.default_class, b.max_running_per_owner, b.max_queued_per_owner) == ("production", 0, 5000)
    assert b.classes[0] == PriorityClass("interactive", admin_only=True)
    with pytest.raises(ValidationError, match="default_class 'urgent' is not one of the \\[scheduling\\] classes"):
        config([{"type": "noop", "name": "a", "default_class": "urgent"}])


# ---- the scheduler and broker ---------------------------------------------------------------------------


async def test_a_light_user_starts_within_the_first_dispatch_rounds() -> None:
    """1,000 tasks of one user queued first, then 10 of another: all 10 start within 6 rounds of 4 slots
    (alternating exactly would take 5; measured run times jitter the fair share by a task or two)."""
    adapter = Recording(slots=4, delay=0.01)
    broker = broker_with(adapter)
    scheduler = await paused(broker)
    heavy = [await broker.start_task("r", PAYLOAD, "heavy") for _ in range(1000)]
    light = [await broker.start_task("r", PAYLOAD, "light") for _ in range(10)]
    assert max(scheduler.position(item) for item in light) <= 20
    resume(scheduler)
    await asyncio.gather(*(item.wait() for item in light))
    last = max(adapter.order.index(item.id) for item in light)
    print(f"the light user's 10 tasks were all submitted within the first {last + 1} submissions")
    assert last < 24
    await broker.stop(0)
    assert sum(item.state is TaskState.CANCELLED for item in heavy) > 900


async def test_heavy_recent_usage_lets_a_newcomer_go_first() -> None:
    adapter = Recording(slots=2, delay=0.01)
    broker = broker_with(adapter)
    await broker.start()
    scheduler = broker.resource("r").scheduler
    done = [await broker.start_task("r", PAYLOAD, "heavy") for _ in range(20)]
    await asyncio.gather(*(item.wait() for item in done))
    scheduler.dispatching = False
    heavy = [await broker.start_task("r", PAYLOAD, "heavy") for _ in range(10)]
    new = [await broker.start_task("r", PAYLOAD, "new") for _ in range(10)]
    resume(scheduler)
    await asyncio.gather(*(item.wait() for item in [*heavy, *new]))
    order = [adapter.order.index(item.id) - 20 for item in new]
    assert sorted(order) == list(range(10)), "the user with no recent usage takes the first dispatches"
    await broker.stop(0)


async def test_usage_from_before_a_restart_still_counts() -> None:
    before = task("heavy")
    before.transition(TaskState.RUNNING)
    before.transition(TaskState.COMPLETED)
    now = time.time()
    before.history[-1] = replace(before.view, started_at=now - 600, ended_at=now - 60)  # 9 QPU-minutes, 1 ago
    adapter = Recording(slots=1, delay=0.0)
    broker = broker_with(adapter)
    scheduler = await paused(broker)
    await broker.restore([before], [], set(), set())
    heavy = await broker.start_task("r", PAYLOAD, "heavy")
    new = await broker.start_task("r", PAYLOAD, "new")
    assert (scheduler.position(new), scheduler.position(heavy)) == (1, 2), "the journal's usage is charged again"
    resume(scheduler)
    await asyncio.gather(heavy.wait(), new.wait())
    assert adapter.order == [new.id, heavy.id]
    await broker.stop(0)


async def test_tasks_under_a_lease_share_its_slurm_accounts_fair_share() -> None:
    broker = broker_with(Recording(slots=1, delay=0.0))
    scheduler = await paused(broker)
    ann = broker.acquire("r", "ann", "101", account="physics")
    ben = broker.acquire("r", "ben", "102", account="physics")
    anns = [await broker.start_task("r", PAYLOAD, "ann", lease_token=ann.token) for _ in range(4)]
    bens = [await broker.start_task("r", PAYLOAD, "ben", lease_token=ben.token) for _ in range(4)]
    cats = [await broker.start_task("r", PAYLOAD, "cat") for _ in range(4)]
    assert {item.view.account for item in anns + bens} == {"physics"} and cats[0].view.account == "cat"
    places = {name: [scheduler.position(item) for item in tasks]
              for name, tasks in (("ann", anns), ("ben", bens), ("cat", cats))}
    assert places == {"ann": [1, 3, 5, 7], "cat": [2, 4, 6, 8], "ben": [9, 10, 11, 12]}, \
        "physics (ann then ben, in order) and cat alternate"
    await broker.stop(0)


async def test_per_owner_queue_and_shot_limits_name_the_limit() -> None:
    adapter = Recording(slots=1, delay=0.0)
    broker = broker_with(adapter, SchedulingPolicy(max_queued_per_owner=3, max_shots_per_task=100))
    await paused(broker)
    for _ in range(3):
        await broker.start_task("r", PAYLOAD, "u")
    with pytest.raises(errors.ResourceExhausted, match="you have 3 tasks queued on 'r', the per-user limit"):
        await broker.start_task("r", PAYLOAD, "u")
    await broker.start_task("r", PAYLOAD, "other")
    with pytest.raises(errors.ResourceExhausted, match="asks for 500 shots; resource 'r' takes at most 100 shots"):
        await broker.start_task("r", PulserSequence(sequence="{}", job_runs=500), "other")
    with pytest.raises(errors.InvalidArgument, match="unknown priority class 'top'"):
        await broker.start_task("r", PAYLOAD, "other", priority="top")
    await broker.stop(0)


async def test_running_limit_holds_one_owner_while_another_fills_the_slots() -> None:
    adapter = Recording(slots=4, delay=0.05)
    broker = broker_with(adapter, SchedulingPolicy(max_running_per_owner=2))
    await broker.start()
    tasks = [await broker.start_task("r", PAYLOAD, owner) for owner in ["a"] * 6 + ["b"] * 6]
    most: dict[str, int] = {}
    while not all(item.state.terminal for item in tasks):
        now = Counter(item.owner for item in tasks if item.state is TaskState.RUNNING)
        most = {owner: max(most.get(owner, 0), now[owner]) for owner in ("a", "b")}
        await asyncio.sleep(0.005)
    assert most == {"a": 2, "b": 2}
    assert all(item.state is TaskState.COMPLETED for item in tasks)
    await broker.stop(0)


async def test_estimated_start_follows_position_once_a_run_time_is_known() -> None:
    adapter = Recording(slots=2, delay=0.05)
    broker = broker_with(adapter)
    scheduler = await paused(broker)
    waiting = [await broker.start_task("r", PAYLOAD, "u") for _ in range(6)]
    assert scheduler.estimated_start(waiting[0]) is None, "no run has finished: no estimate"
    resume(scheduler)
    await waiting[0].wait()
    scheduler.dispatching = False
    await asyncio.gather(*(item.wait() for item in waiting if item.state is not TaskState.QUEUED))
    queued = [await broker.start_task("r", PAYLOAD, "u") for _ in range(6)]
    assert scheduler.estimated_start(queued[0]) is None, "dispatch is off: no estimate"
    scheduler.dispatching = True
    assert scheduler.run_seconds is not None and scheduler.run_seconds >= 0.05
    before = time.time()
    etas = [scheduler.estimated_start(item) for item in queued]
    assert all(eta is not None and eta >= before for eta in etas)
    assert etas == sorted(etas) and etas[-1] > etas[0]
    assert scheduler.estimated_start(waiting[0]) is None, "a finished task has no estimate"
    await broker.stop(0)


# ---- a real daemon, two users ----------------------------------------------------------------------------

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}


@asynccontextmanager
async def two_users(slots: int, delay: float) -> AsyncIterator[dict[str, pb_grpc.QuantumResourcesStub]]:
    """A daemon with one noop resource and a stub per token-authenticated user."""
    tokens = short_dir() / "tokens.toml"
    tokens.write_text("".join(f'[[token]]\nname = "{name}"\ntoken = "{token}"\n' for name, token in TOKENS.items()))
    os.chmod(tokens, 0o600)
    cfg = config([{"type": "noop", "name": "noop", "slots": slots, "delay_seconds": delay}],
                 daemon={"auth": "token"}, auth={"tokens_file": str(tokens)},
                 limits={"calls_per_second": 0})
    async with running(cfg) as daemon:
        stubs = {}
        channels = []
        for name, token in TOKENS.items():
            channel = grpc.aio.insecure_channel(f"unix:{daemon.socket}")
            channels.append(channel)
            stubs[name] = _Authorized(pb_grpc.QuantumResourcesStub(channel), token)
        try:
            yield stubs
        finally:
            for channel in channels:
                await channel.close()


class _Authorized:
    """A stub whose calls carry a bearer token."""

    def __init__(self, stub: pb_grpc.QuantumResourcesStub, token: str) -> None:
        self._stub, self._metadata = stub, (("authorization", f"Bearer {token}"),)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self._stub, name)
        return lambda request: method(request, metadata=self._metadata, timeout=60)


def start_request() -> pb.StartTaskRequest:
    return pb.StartTaskRequest(resource="noop", payload=pb.Payload(
        pulser_sequence=pb.PulserSequence(sequence="{}", job_runs=1)))


async def start_many(stub: _Authorized, count: int) -> list[str]:
    return [(await stub.StartTask(start_request())).id for _ in range(count)]


async def finished(stub: _Authorized, ids: list[str]) -> list[pb.Task]:
    while True:
        tasks = [await stub.GetTask(pb.GetTaskRequest(task_id=task_id)) for task_id in ids]
        if all(task.state == pb.TASK_STATE_COMPLETED for task in tasks):
            return tasks
        await asyncio.sleep(0.05)


def first_starts(tasks: list[pb.Task], count: int) -> list[str]:
    """Owners of the first ``count`` tasks to start."""
    ordered = sorted(tasks, key=lambda task: task.start_time.ToNanoseconds())
    return [task.owner for task in ordered[:count]]


async def test_two_users_with_equal_demand_share_the_resource_evenly() -> None:
    """Both users queue 60 tasks at once on 2 slots: each gets 50% ± 10% of the first 60 dispatches."""
    async with two_users(slots=2, delay=0.01) as users:
        alice, bob = await asyncio.gather(start_many(users["alice"], 60), start_many(users["bob"], 60))
        tasks = [*await finished(users["alice"], alice), *await finished(users["bob"], bob)]
    starts = first_starts(tasks, 60)
    share = starts.count("alice") / len(starts)
    print(f"alice's share of the first 60 dispatches: {share:.2f}")
    assert 0.4 <= share <= 0.6
    assert {task.account for task in tasks} == {"alice", "bob"}
    assert {task.priority for task in tasks} == {"production"}


async def test_a_user_with_heavy_recent_usage_gets_less() -> None:
    """Alice has just used the resource for 40 tasks; then both queue 30: Bob gets most of the first 30."""
    async with two_users(slots=2, delay=0.02) as users:
        await finished(users["alice"], await start_many(users["alice"], 40))
        alice, bob = await asyncio.gather(start_many(users["alice"], 30), start_many(users["bob"], 30))
        tasks = [*await finished(users["alice"], alice), *await finished(users["bob"], bob)]
    starts = first_starts(tasks, 30)
    share = starts.count("bob") / len(starts)
    print(f"bob's share of the first 30 dispatches after alice's heavy use: {share:.2f}")
    assert share >= 0.7


async def test_get_task_reports_position_priority_and_estimate() -> None:
    async with two_users(slots=1, delay=0.2) as users:
        alice = users["alice"]
        first = await start_many(alice, 2)
        await finished(alice, first)
        ids = await start_many(alice, 4)
        tasks = [await alice.GetTask(pb.GetTaskRequest(task_id=task_id)) for task_id in ids]
        queued = [task for task in tasks if task.state == pb.TASK_STATE_QUEUED]
        assert len(queued) >= 2
        assert [task.queue_position for task in queued] == list(range(1, len(queued) + 1))
        stamps = [task.estimated_start_time.ToNanoseconds() for task in queued]
        assert all(task.HasField("estimated_start_time") for task in queued) and stamps == sorted(stamps)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await alice.StartTask(pb.StartTaskRequest(resource="noop", priority="urgent", payload=start_request().payload))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "classes: interactive, production, low" in (refused.value.details() or "")
        low = await alice.StartTask(pb.StartTaskRequest(resource="noop", priority="low", payload=start_request().payload))
        assert (low.priority, low.account, low.shots) == ("low", "alice", 1)

