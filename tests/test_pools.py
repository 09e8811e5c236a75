"""Pools of resources over real gRPC: routing by each member's queue, ordered fallback when a member goes offline or
is drained, a simulator fallback only for tasks that allow it, payloads routed to the member whose device accepts
them, the binding kept across a ``kill -9``, and pool configs refused at load. The members are backends of the IBM
Quantum System API emulator with a real S3 (moto); which member ran a task is asserted from the emulator's records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemons import config, running, short_dir, subprocess_daemon
from google.protobuf.timestamp_pb2 import Timestamp
from ibm_services import Services, emulator, ibm_services, record
from test_cli import qrmid as cli
from test_ibm_quantum_system import API_KEY, BUCKET, CRN, isa_bell
from test_ibm_quantum_system import resource as ibm_resource
from test_recovery import Qrmid

from qrmid.client import AsyncClient, sampler_payload
from qrmid.ops.config import ConfigError, load
from qrmid.v1 import admin_pb2, admin_pb2_grpc, metrics_pb2, metrics_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

# east and west are the same device (perth), small another one (manila: 5 qubits in a line); one lane each
BACKENDS = {"east": "perth", "west": "perth", "small": "manila"}
BELL = isa_bell(shots=20)
WAIT = 120.0  # seconds a task may take to end before a test fails rather than hang


def circuit(a: int, b: int) -> pb.Payload:
    """A sampler of one cx on physical qubits ``a`` and ``b``: an ISA circuit only where they are coupled."""
    qasm = (f'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\nx ${a};\ncx ${a}, ${b};\nc[0] = measure ${a};\n'
            f'c[1] = measure ${b};\n')
    return sampler_payload({"pubs": [[qasm, None, 20]], "version": 2})


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    backends = "".join(f'[[backends]]\nname = "{name}"\ndevice = "{device}"\nseed = 7\nnoise = false\n'
                       'lanes = { hpc_workload_manager = 1, ibm_quantum_compute = 1 }\n'
                       for name, device in BACKENDS.items())
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n{backends}')
    with ibm_services(path, BUCKET) as found:
        yield found


@pytest.fixture
async def backends(services: Services) -> AsyncIterator[Services]:
    """Every backend online and quick, before and after the test."""
    for name in BACKENDS:
        await emulator(services, "POST", f"/_emulator/backends/{name}", {"status": "online", "job_duration_s": 0.2})
    yield services
    for name in BACKENDS:
        await emulator(services, "POST", f"/_emulator/backends/{name}", {"status": "online", "job_duration_s": 0.2})


def members(services: Services, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(ibm_resource(name, services, status_interval=0.2, retry_deadline_seconds=5) for name in BACKENDS), *extra]


async def submitted(services: Services, backend: str) -> set[str]:
    """The ids of the jobs ``backend`` admitted (qrmid's task ids)."""
    return {submission["id"] for submission in (await record(services, backend))["submissions"]}


async def until(check: Any, what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_least_busy_sends_tasks_to_the_member_with_the_shorter_queue(backends: Services) -> None:
    await emulator(backends, "POST", "/_emulator/backends/east", {"job_duration_s": 5.0})
    cfg = config(members(backends, {"type": "pool", "name": "twins", "members": ["east", "west"]}))
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        pool = await qrmid.resource("twins")
        assert (list(pool.members), pool.pool_policy, pool.fallback) == (["east", "west"], "least-busy", "")
        assert pool.capacity.slots_total == 2 and pool.status == pb.RESOURCE_STATUS_ONLINE
        direct = [await qrmid.start_task("east", BELL) for _ in range(3)]  # one on east's lane, the others wait
        pooled = [await qrmid.start_task("twins", BELL) for _ in range(3)]
        done = [await qrmid.wait(task.id, timeout=WAIT) for task in pooled]
        assert [(task.state, task.resource, task.member) for task in done] == \
            [(pb.TASK_STATE_COMPLETED, "twins", "west")] * 3
        assert [(await qrmid.task(task.id)).state for task in direct].count(pb.TASK_STATE_COMPLETED) < 3, \
            "east still had its own tasks to run when the pool's were done"
        ids = {task.id for task in pooled}
        assert ids <= await submitted(backends, "west") and not ids & await submitted(backends, "east")
        for task in reversed(direct):  # the queued ones first: none takes the lane another's cancel frees
            await qrmid.stop_task(task.id)


async def test_ordered_pool_waits_for_its_first_member_and_moves_on_only_while_it_is_down(backends: Services) -> None:
    cfg = config(members(backends, {"type": "pool", "name": "line", "members": ["east", "west"], "policy": "ordered"}))
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid, \
            grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        first = [await qrmid.start_task("line", BELL) for _ in range(3)]  # east's one lane: they wait their turn
        assert [(await qrmid.wait(task.id, timeout=WAIT)).member for task in first] == ["east"] * 3

        await emulator(backends, "POST", "/_emulator/backends/east", {"status": "offline"})
        await until(lambda: _status(qrmid, "east", pb.RESOURCE_STATUS_OFFLINE), "east seen offline")
        offline = [await qrmid.start_task("line", BELL) for _ in range(2)]
        assert [(await qrmid.wait(task.id, timeout=WAIT)).member for task in offline] == ["west"] * 2

        await emulator(backends, "POST", "/_emulator/backends/east", {"status": "online"})
        await until(lambda: _status(qrmid, "east", pb.RESOURCE_STATUS_ONLINE), "east seen online")
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await admin.DrainResource(admin_pb2.DrainResourceRequest(resource="east", reason="recalibrating"))
        drained = await qrmid.start_task("line", BELL)
        assert (await qrmid.wait(drained.id, timeout=WAIT)).member == "west"
        await admin.ResumeResource(admin_pb2.ResumeResourceRequest(resource="east"))
        resumed = await qrmid.start_task("line", BELL)
        assert (await qrmid.wait(resumed.id, timeout=WAIT)).member == "east"

        east, west = await submitted(backends, "east"), await submitted(backends, "west")
        assert {task.id for task in [*first, resumed]} <= east - west
        assert {task.id for task in [*offline, drained]} <= west - east


async def test_fallback_runs_only_tasks_that_allow_it_and_says_so(backends: Services) -> None:
    cfg = config(members(backends, {"type": "local-qiskit", "name": "sim", "slots": 1},
                         {"type": "pool", "name": "backed", "members": ["east", "sim"], "fallback": "sim"}))
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        assert (await qrmid.resource("backed")).fallback == "sim"
        await emulator(backends, "POST", "/_emulator/backends/east", {"status": "paused"})
        await until(lambda: _status(qrmid, "east", pb.RESOURCE_STATUS_PAUSED), "east seen paused")
        strict = await qrmid.start_task("backed", BELL)
        allowed = await qrmid.start_task("backed", BELL, allow_fallback=True)
        done = await qrmid.wait(allowed.id, timeout=WAIT)
        assert (done.state, done.member, done.allow_fallback) == (pb.TASK_STATE_COMPLETED, "sim", True)
        assert json.loads(await qrmid.result(allowed.id))["__type__"] == "PrimitiveResult"
        waiting = await qrmid.task(strict.id)
        assert (waiting.state, waiting.member, waiting.allow_fallback) == (pb.TASK_STATE_QUEUED, "", False)
        assert "no member of pool 'backed' can take it now: east is paused" in waiting.wait_reason

        await emulator(backends, "POST", "/_emulator/backends/east", {"status": "online"})
        done = await qrmid.wait(strict.id, timeout=WAIT)
        assert (done.state, done.member) == (pb.TASK_STATE_COMPLETED, "east")
        assert strict.id in await submitted(backends, "east")
        assert allowed.id not in await submitted(backends, "east"), "the simulator's run is not passed off as east's"


async def test_each_task_goes_to_a_member_whose_device_accepts_it(backends: Services) -> None:
    cfg = config(members(backends, {"type": "pool", "name": "mixed", "members": ["east", "small"]},
                         {"type": "pool", "name": "twins", "members": ["east", "west"]}))
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        for_small = [await qrmid.start_task("mixed", circuit(2, 3)) for _ in range(2)]  # coupled on manila only
        for_east = [await qrmid.start_task("mixed", circuit(1, 3)) for _ in range(2)]  # coupled on perth only
        ran_on = [(await qrmid.wait(task.id, timeout=WAIT)).member for task in for_small + for_east]
        assert ran_on == ["small"] * 2 + ["east"] * 2
        assert {task.id for task in for_small} <= await submitted(backends, "small")
        assert {task.id for task in for_east} <= await submitted(backends, "east")

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await qrmid.start_task("mixed", circuit(0, 4))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no member of pool 'mixed' accepts it" in refused.value.details()
        assert "east: " in refused.value.details() and "small: " in refused.value.details()

        with pytest.raises(grpc.aio.AioRpcError) as mixed:
            await qrmid.target("mixed")
        assert mixed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "members (east, small) describe different devices" in mixed.value.details()
        assert json.loads(await qrmid.target("twins")) == json.loads(await qrmid.target("east"))
        assert (await qrmid.resource("small")).status == pb.RESOURCE_STATUS_ONLINE, "the daemon keeps serving"


async def test_a_lease_on_a_pool_holds_its_tasks_wherever_they_run_and_cancels_them_all(backends: Services) -> None:
    for name in ("east", "west"):
        await emulator(backends, "POST", f"/_emulator/backends/{name}", {"job_duration_s": 30.0})
    cfg = config(members(backends, {"type": "pool", "name": "twins", "members": ["east", "west"]}))
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid, \
            grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        lease = await qrmid.acquire("twins")
        with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
            await qrmid.start_task("east", BELL, lease_token=lease.token)
        assert elsewhere.value.code() != grpc.StatusCode.OK, "a lease on the pool is not one on its members"
        tasks = [await qrmid.start_task("twins", BELL, lease_token=lease.token) for _ in range(3)]
        await until(lambda: _all_running(qrmid, [task.id for task in tasks[:2]]), "a task running on each member")
        stopped = await qrmid.stop_task(tasks[0].id)
        assert (stopped.state, stopped.member) == (pb.TASK_STATE_CANCELLED, "east")
        await until(lambda: _all_running(qrmid, [tasks[2].id]), "the pool's next task running")
        assert (await qrmid.task(tasks[2].id)).member == "east", "the freed lane went to the pool's next task"
        released = await qrmid.release(lease.token)
        assert released.cancelled_tasks == 2
        assert [(await qrmid.task(task.id)).state for task in tasks] == [pb.TASK_STATE_CANCELLED] * 3

        async def freed() -> bool:
            return [(await record(backends, name))["stored"] for name in ("east", "west")] == [0, 0]
        await until(freed, "every lane freed on the service")
        records = (await metrics_pb2_grpc.MetricsServiceStub(channel).ListAccounting(
            metrics_pb2.ListAccountingRequest(resource="east"))).records
        assert {(record.task_id, record.member) for record in records if record.resource == "twins"} == \
            {(tasks[0].id, "east"), (tasks[2].id, "east")}, "a member's accounting counts the pool's tasks it ran"


async def test_a_bound_task_is_followed_on_its_member_after_kill_9(backends: Services) -> None:
    """The pool's first task runs on east when the daemon dies; its second, which only east accepts, waits unbound
    while small is free: after the restart the first is followed on east, the second still waits for east."""
    await emulator(backends, "POST", "/_emulator/backends/east", {"job_duration_s": 8.0})
    pool = '[[resources]]\ntype = "pool"\nname = "mixed"\nmembers = ["east", "small"]\n'
    daemon = Qrmid("".join(_toml(table) for table in members(backends)) + pool)
    only_east = circuit(1, 3)
    try:
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            bound = await qrmid.start_task("mixed", only_east, request_id="bound")
            await until(lambda: _state(qrmid, bound.id, pb.TASK_STATE_RUNNING), "the first task running on east")
            waiting = await qrmid.start_task("mixed", only_east, request_id="waiting")
            queued = await qrmid.task(waiting.id)
            assert (queued.state, queued.member) == (pb.TASK_STATE_QUEUED, "")
            assert (await qrmid.task(bound.id)).member == "east"
        daemon.kill()
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            again = await qrmid.task(bound.id)
            assert (again.state, again.member) == (pb.TASK_STATE_RUNNING, "east"), "followed on its member"
            finished = [await qrmid.wait(task.id, timeout=WAIT) for task in (bound, waiting)]
        assert [(task.state, task.member) for task in finished] == [(pb.TASK_STATE_COMPLETED, "east")] * 2
        seen = (await record(backends, "east"))["submissions"]
        assert [submission["id"] for submission in seen].count(bound.id) == 1, "never submitted twice"
        assert [submission["id"] for submission in seen].count(waiting.id) == 1
        assert not {bound.id, waiting.id} & await submitted(backends, "small"), "small never accepted them"
    finally:
        daemon.stop()


async def test_a_member_in_maintenance_is_not_taken_and_lets_the_fallback_run() -> None:
    cfg = config([{"type": "noop", "name": "qpu"}, {"type": "noop", "name": "sim"},
                  {"type": "pool", "name": "qpus", "members": ["qpu", "sim"], "fallback": "sim"}])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid, \
            grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        now = time.time()
        window = await admin.CreateWindow(admin_pb2.CreateWindowRequest(window=pb.Window(
            resource="qpu", kind="maintenance", start_time=Timestamp(seconds=int(now) - 1),
            end_time=Timestamp(seconds=int(now) + 3600), reason="calibration")))
        strict = await qrmid.start_task("qpus", BELL)
        allowed = await qrmid.start_task("qpus", BELL, allow_fallback=True)
        assert (await qrmid.wait(allowed.id, timeout=WAIT)).member == "sim"
        waiting = await qrmid.task(strict.id)
        assert waiting.state == pb.TASK_STATE_QUEUED and "no member of pool 'qpus' can take it now: qpu: " in \
            waiting.wait_reason
        await admin.DeleteWindow(admin_pb2.DeleteWindowRequest(id=window.id))
        done = await qrmid.wait(strict.id, timeout=WAIT)
        assert (done.state, done.member) == (pb.TASK_STATE_COMPLETED, "qpu")


async def test_an_exclusive_lease_on_a_pool_waits_for_its_running_task_then_runs_alone() -> None:
    cfg = config([{"type": "noop", "name": "a", "delay_seconds": 2.0}, {"type": "noop", "name": "b"},
                  {"type": "pool", "name": "ab", "members": ["a", "b"], "policy": "ordered"}])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        first = await qrmid.start_task("ab", BELL)
        await until(lambda: _state(qrmid, first.id, pb.TASK_STATE_RUNNING), "the pool's task running on a")
        lease = await qrmid.acquire("ab", mode="exclusive", wait=60)
        ended = await qrmid.task(first.id)
        assert ended.state == pb.TASK_STATE_COMPLETED, "granted only once the pool's running task ended"
        assert ended.end_time.ToNanoseconds() <= lease.create_time.ToNanoseconds()
        other = await qrmid.start_task("ab", BELL)
        mine = await qrmid.start_task("ab", BELL, lease_token=lease.token)
        assert (await qrmid.wait(mine.id, timeout=WAIT)).member == "a"
        held = await qrmid.task(other.id)
        assert held.state == pb.TASK_STATE_QUEUED and "exclusive lease" in held.wait_reason
        await qrmid.release(lease.token)
        assert (await qrmid.wait(other.id, timeout=WAIT)).state == pb.TASK_STATE_COMPLETED


def test_the_cli_allows_the_fallback_and_shows_the_member(tmp_path: Path) -> None:
    pool = '[[resources]]\ntype = "pool"\nname = "qpus"\nmembers = ["qpu", "sim"]\nfallback = "sim"\n'
    bell = tmp_path / "bell.qasm"
    bell.write_text('OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\n'
                    "c = measure q;\n")
    with subprocess_daemon('[[resources]]\ntype = "noop"\nname = "qpu"\n[[resources]]\ntype = "noop"\nname = "sim"\n'
                           f"{pool}") as (address, _):
        cli("admin", "drain", "qpu", "--reason", "calibration", address=address)
        waiting = cli("submit", "qpus", "--qasm", str(bell), address=address).stdout.strip()
        shown = cli("status", waiting, address=address).stdout
        assert "no member of pool 'qpus' can take it now: qpu is draining (calibration)" in shown
        ran = cli("run", "qpus", "--qasm", str(bell), "--allow-fallback", address=address)
        task_id = ran.stderr.split("task ", 1)[1].split(":", 1)[0]
        assert "member    sim" in cli("status", task_id, address=address).stdout
        cli("admin", "resume", "qpu", address=address)
        cli("watch", waiting, address=address)
        assert "member    qpu" in cli("status", waiting, address=address).stdout
        wide = cli("tasks", "-o", "wide", address=address).stdout.splitlines()
        assert wide[0].split()[-1] == "MEMBER", wide[0]
        assert {line.split()[0]: line.split()[-1] for line in wide[1:]} == {task_id: "sim", waiting: "qpu"}


def test_a_reload_that_changes_a_pool_is_refused_and_the_daemon_serves_on() -> None:
    resources = '[[resources]]\ntype = "noop"\nname = "qpu"\n[[resources]]\ntype = "noop"\nname = "sim"\n'
    pool = '[[resources]]\ntype = "pool"\nname = "qpus"\nmembers = ["qpu", "sim"]\n'
    with subprocess_daemon(resources + pool) as (address, process):
        path = Path(process.args[-1])
        path.write_text(path.read_text().replace('members = ["qpu", "sim"]', 'members = ["qpu"]'))
        refused = cli("admin", "reload", address=address, check=False)
        assert refused.returncode != 0
        assert "config not reloaded: its pools changed" in refused.stderr and "restart the daemon" in refused.stderr
        assert "qpus" in cli("resources", address=address).stdout


@pytest.mark.parametrize(("pool", "key", "message"), [
    ('members = ["east", "nowhere"]', "resources[2].members",
     "pool 'p' names 'nowhere', which is not a configured resource (resources: east, west)"),
    ('members = ["east", "other"]', "resources[2].members",
     "pool 'p' names pool 'other': a pool's members are resources, not pools"),
    ('members = ["east"]\nfallback = "west"', "resources[2].fallback", "'west' is not a member of pool 'p'"),
    ("members = []", "resources[2].members", "pool 'p' has no members: list the resources its tasks run on"),
    ('members = ["west"]\nfallback = "west"', "resources[2].members", "pool 'p' has no members besides its fallback"),
    ('members = ["east", "east"]', "resources[2].members", "pool 'p' lists a member twice"),
])
def test_bad_pools_are_refused_at_load_naming_the_key(pool: str, key: str, message: str) -> None:
    path = short_dir() / "qrmid.toml"
    path.write_text('[[resources]]\ntype = "noop"\nname = "east"\n[[resources]]\ntype = "noop"\nname = "west"\n'
                    f'[[resources]]\ntype = "pool"\nname = "p"\n{pool}\n'
                    '[[resources]]\ntype = "pool"\nname = "other"\nmembers = ["west"]\n')
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert str(refused.value).startswith(f"{path}: key '{key}': {message}")


def test_an_unknown_policy_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text('[[resources]]\ntype = "noop"\nname = "east"\n'
                    '[[resources]]\ntype = "pool"\nname = "p"\nmembers = ["east"]\npolicy = "random"\n')
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert f"{path}: key 'resources[1].policy': Input should be 'least-busy' or 'ordered'" in str(refused.value)


async def _status(qrmid: AsyncClient, name: str, status: int) -> bool:
    return bool((await qrmid.resource(name)).status == status)


async def _all_running(qrmid: AsyncClient, ids: list[str]) -> bool:
    return [(await qrmid.task(task_id)).state for task_id in ids] == [pb.TASK_STATE_RUNNING] * len(ids)


async def _state(qrmid: AsyncClient, task_id: str, state: int) -> bool:
    return bool((await qrmid.task(task_id)).state == state)


def _toml(table: dict[str, Any]) -> str:
    return "[[resources]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())
