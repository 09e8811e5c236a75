"""Cluster mode with members in this process, on a real PostgreSQL: one member dispatches each resource, every member
serves every call (tasks started, watched, fetched and cancelled on another member than the dispatcher's; request ids,
leases and drains across members), the dispatch moves when its member stops or is cut off, and a deposed member's
writes are fenced."""

from __future__ import annotations

import asyncio
import contextlib
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import tomli_w
from daemons import config, running, short_dir, write_config
from ibm_services import Services, record
from postgres import Database
from test_ibm_quantum_system import isa_bell
from test_postgres_store import cluster
from test_recovery import ibm_resource, perth

from qrmid.client import AsyncClient, pulser_payload, sampler_payload
from qrmid.daemon import Daemon
from qrmid.ops.config import load
from qrmid.v1 import admin_pb2, admin_pb2_grpc, metrics_pb2, metrics_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

PAYLOAD = pulser_payload({"sequence": "x"}, 3)
PLAIN_BELL = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\nc = measure q;\n'


@pytest.fixture(scope="module")
def ibm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with perth(tmp_path_factory.mktemp("ibm")) as services:
        yield services


def noop(delay: float = 0.0, slots: int = 2) -> list[dict[str, Any]]:
    return [{"type": "noop", "name": "noop", "slots": slots, "delay_seconds": delay}]


@contextlib.asynccontextmanager
async def member(db: Database, name: str, resources: list[dict[str, Any]], **keys: Any) -> AsyncIterator[Daemon]:
    async with running(config(resources, cluster={**cluster(db, name), "failover_seconds": 4, **keys})) as daemon:
        yield daemon


async def dispatcher(*daemons: Daemon, resource: str = "noop", timeout: float = 10.0) -> Daemon:
    """The one member that dispatches ``resource``, once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        leading = [d for d in daemons if d.broker.resources[resource].scheduler.leading]
        assert len(leading) <= 1, "two members dispatch one resource"
        if leading:
            return leading[0]
        assert time.monotonic() < deadline, f"no member dispatches {resource} after {timeout} s"
        await asyncio.sleep(0.05)


async def test_a_task_started_on_one_member_is_dispatched_by_the_other_and_watched_and_fetched_everywhere(
        database: Database) -> None:
    async with member(database, "a", noop(0.3)) as a, member(database, "b", noop(0.3)) as b:
        leader = await dispatcher(a, b)
        other = b if leader is a else a
        async with AsyncClient(f"unix:{other.socket}") as there, AsyncClient(f"unix:{leader.socket}") as here:
            task = await there.start_task("noop", PAYLOAD)
            states = [message.state async for message in there.watch(task.id)]
            assert states == [pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING, pb.TASK_STATE_COMPLETED]
            assert (await here.task(task.id)).state == pb.TASK_STATE_COMPLETED
            assert await there.result(task.id) == await here.result(task.id)
        for daemon in (leader, other):  # every member keeps the whole cluster's accounting records
            async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
                accounting = await metrics_pb2_grpc.MetricsServiceStub(channel).ListAccounting(
                    metrics_pb2.ListAccountingRequest())
            assert [(record.task_id, record.state) for record in accounting.records] == [
                (task.id, pb.TASK_STATE_COMPLETED)]


async def test_a_task_queued_behind_others_is_cancelled_from_a_member_that_does_not_dispatch_it(
        database: Database) -> None:
    async with member(database, "a", noop(30, slots=1)) as a, member(database, "b", noop(30, slots=1)) as b:
        leader = await dispatcher(a, b)
        other = b if leader is a else a
        async with AsyncClient(f"unix:{other.socket}") as there:
            running_task = await there.start_task("noop", PAYLOAD)
            queued = await there.start_task("noop", PAYLOAD)
            await _started(there, running_task.id)
            assert (await there.task(queued.id)).queue_position == 1
            for task in (queued, running_task):
                stopped = await there.stop_task(task.id)
                assert stopped.state == pb.TASK_STATE_CANCELLED, stopped
        for task in (queued, running_task):
            assert leader.broker.task(task.id).state.value == "cancelled"


async def test_every_member_shows_the_same_queue_positions(database: Database) -> None:
    async with member(database, "a", noop(30, slots=1)) as a, member(database, "b", noop(30, slots=1)) as b, \
            AsyncClient(f"unix:{a.socket}") as on_a, AsyncClient(f"unix:{b.socket}") as on_b:
        started = await asyncio.gather(*(client.start_task("noop", PAYLOAD) for _ in range(6) for client in (on_a, on_b)))
        ids = [task.id for task in started]
        await _until(lambda: all(task_id in a.broker._tasks and task_id in b.broker._tasks for task_id in ids))
        positions = [[(await client.task(task_id)).queue_position for task_id in ids] for client in (on_a, on_b)]
        assert positions[0] == positions[1], positions
        assert sorted(positions[0]) == [0, *range(1, len(ids))], "one runs, the others queue in one order"


async def test_a_request_id_names_one_task_on_every_member(database: Database) -> None:
    async with member(database, "a", noop()) as a, member(database, "b", noop()) as b, \
            AsyncClient(f"unix:{a.socket}") as on_a, AsyncClient(f"unix:{b.socket}") as on_b:
        first = await on_a.start_task("noop", PAYLOAD, request_id="job-42-step-1")
        await _known(b, first.id)
        again = await on_b.start_task("noop", PAYLOAD, request_id="job-42-step-1")
        assert again.id == first.id
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


async def test_a_member_that_has_not_heard_of_a_task_yet_reads_it_from_the_store(database: Database) -> None:
    async with member(database, "a", noop()) as a, member(database, "b", noop()) as b, \
            AsyncClient(f"unix:{a.socket}") as on_a, AsyncClient(f"unix:{b.socket}") as on_b:
        assert b.members is not None
        listening = next(loop for loop in b.members._loops if loop.get_name() == "qrmid cluster listener")
        listening.cancel()  # b hears nothing of a from now on
        await asyncio.gather(listening, return_exceptions=True)
        task = await on_a.start_task("noop", PAYLOAD, request_id="step-7")
        assert (await on_b.task(task.id)).id == task.id
        again = await on_b.start_task("noop", PAYLOAD, request_id="step-8")
        assert (await on_a.start_task("noop", PAYLOAD, request_id="step-8")).id == again.id
        taken = await on_a.start_task("noop", PAYLOAD, request_id="step-9")  # b inserts it too, and is refused
        assert (await on_b.start_task("noop", PAYLOAD, request_id="step-9")).id == taken.id
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (3,)


async def test_leases_revocations_drains_and_resumes_act_on_every_member(database: Database) -> None:
    async with member(database, "a", noop()) as a, member(database, "b", noop()) as b, \
            AsyncClient(f"unix:{a.socket}") as on_a, AsyncClient(f"unix:{b.socket}") as on_b:
        lease = await on_a.acquire("noop")
        await _until(lambda: any(held.id == lease.id for held in b.broker.leases.live()))
        task = await on_b.start_task("noop", PAYLOAD, lease_token=lease.token)
        await on_b.wait(task.id)
        await on_b.release(lease.token)
        await _until(lambda: not a.broker.leases.live())
        revoked = await on_a.acquire("noop")
        await _until(lambda: any(held.id == revoked.id for held in b.broker.leases.live()))
        async with grpc.aio.insecure_channel(f"unix:{a.socket}") as channel:  # root: an admin
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            await admin.RevokeLease(admin_pb2.RevokeLeaseRequest(lease_id=revoked.id))
            await admin.DrainResource(admin_pb2.DrainResourceRequest(resource="noop", reason="calibration"))
        await _until(lambda: not b.broker.leases.live() and b.broker.resources["noop"].draining)
        assert (await on_b.resource("noop")).status_reason == "calibration"
        async with grpc.aio.insecure_channel(f"unix:{b.socket}") as channel:
            await admin_pb2_grpc.AdminServiceStub(channel).ResumeResource(admin_pb2.ResumeResourceRequest(
                resource="noop"))
        await _until(lambda: not a.broker.resources["noop"].draining)


async def test_a_reload_asked_of_one_member_reloads_every_member_from_its_own_file(database: Database) -> None:
    daemons = []
    for name in ("a", "b"):
        text = tomli_w.dumps(config(noop(), cluster=cluster(database, name)).model_dump(mode="json", exclude_none=True))
        path = write_config(short_dir() / f"{name}.toml", text)
        daemons.append(Daemon(load(path), path))
    a, b = daemons
    await a.start()
    await b.start()
    try:
        path = b.path
        assert path is not None
        path.write_text(path.read_text().replace("slots = 2", "slots = 5"))
        async with grpc.aio.insecure_channel(f"unix:{a.socket}") as channel:  # root: an admin
            await admin_pb2_grpc.AdminServiceStub(channel).ReloadConfig(admin_pb2.ReloadConfigRequest())
        await _until(lambda: b.broker.resources["noop"].adapter.slots == 5)
        assert a.broker.resources["noop"].adapter.slots == 2, "a read its own file, unchanged"
    finally:
        await b.stop()
        await a.stop()


async def test_the_dispatch_moves_to_another_member_when_its_member_stops(database: Database) -> None:
    async with member(database, "a", noop(0.2)) as a:
        await dispatcher(a)
        async with member(database, "b", noop(0.2)) as b, AsyncClient(f"unix:{b.socket}") as on_b:
            assert not b.broker.resources["noop"].scheduler.leading
            tasks = [await on_b.start_task("noop", PAYLOAD) for _ in range(6)]
            await a.stop()
            started = time.monotonic()
            assert await dispatcher(b) is b
            assert time.monotonic() - started < 4, "failover_seconds = 4"
            for task in tasks:
                assert (await on_b.wait(task.id)).state == pb.TASK_STATE_COMPLETED
            await a.start()  # back, as a standby


async def test_a_dispatcher_cut_from_postgresql_stops_and_its_successor_runs_every_ibm_task_exactly_once(
        database: Database, ibm: Services) -> None:
    resource = load_resource(ibm_resource(ibm))
    async with member(database, "a", resource) as a, member(database, "b", resource) as b:
        leader = await dispatcher(a, b, resource="perth")
        other = b if leader is a else a
        async with AsyncClient(f"unix:{other.socket}", timeout=120) as there:
            ids = [(await there.start_task("perth", isa_bell(shots=20))).id for _ in range(24)]
            await _started(there, ids[0])
            with database.connect() as conn:  # only the election connection: the leader's pool writes on
                cut = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                   (f"qrmid {leader.members.member} election",)).fetchall()
            assert cut == [(True,)]
            finished = await asyncio.gather(*(there.wait(task_id) for task_id in ids))
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * len(ids)
        await ran_once(ibm, ids)
        seen = await record(ibm, "perth")
        assert seen["max_stored"] <= seen["lanes"] and seen["rejected_429"] == 0, seen


async def test_a_dispatcher_whose_epoch_moved_on_has_its_writes_refused_and_runs_nothing_twice(
        database: Database, ibm: Services, caplog: pytest.LogCaptureFixture) -> None:
    resource = load_resource(ibm_resource(ibm))
    async with member(database, "a", resource) as a, AsyncClient(f"unix:{a.socket}", timeout=120) as qrmid:
        await dispatcher(a, resource="perth")
        ids = [(await qrmid.start_task("perth", isa_bell(shots=20))).id for _ in range(24)]
        await _started(qrmid, ids[0])
        await asyncio.to_thread(_bump_epoch, database, "perth")  # off the loop: it waits for the writer's share lock
        finished = await asyncio.gather(*(qrmid.wait(task_id, timeout=60) for task_id in ids))
    assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * len(ids)
    assert "this member no longer dispatches perth" in caplog.text, "a write of the old epoch was refused"
    await ran_once(ibm, ids)
    with database.connect() as conn:
        assert conn.execute("SELECT epoch FROM resource_epoch WHERE resource = 'perth'").fetchone() == (3,), \
            "elected, fenced by the bump, elected again"


def _bump_epoch(database: Database, resource: str) -> None:
    """Move ``resource``'s dispatch epoch on, as if another member had been elected unbeknown to its dispatcher."""
    with database.connect() as conn:
        conn.execute("UPDATE resource_epoch SET epoch = epoch + 1 WHERE resource = %s", (resource,))


async def ran_once(services: Services, ids: list[str]) -> None:
    """Each of ``ids`` reached the emulator exactly once, and its job was deleted once it ended."""
    wanted = set(ids)
    deadline = time.monotonic() + 10
    while True:
        seen = await record(services, "perth")
        submitted = Counter(entry["id"] for entry in seen["submissions"] if entry["id"] in wanted)
        assert submitted == Counter(ids), "every task reached the backend exactly once"
        if wanted <= {entry["id"] for entry in seen["deleted"]} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert wanted <= {entry["id"] for entry in seen["deleted"]}, "every job was released"


async def test_a_member_without_credentials_serves_the_published_status_and_target_and_checks_payloads(
        database: Database, ibm: Services) -> None:
    resource = load_resource(ibm_resource(ibm))
    bare = [{key: value for key, value in resource[0].items() if not key.startswith("QRMI_IBM_QS_")} | {
        "dispatch": False}]
    async with member(database, "a", resource) as a, member(database, "b", bare) as b, \
            AsyncClient(f"unix:{a.socket}") as on_a, AsyncClient(f"unix:{b.socket}", timeout=60) as on_b:
        assert await dispatcher(a, b, resource="perth") is a
        await _until(lambda: b.broker.resources["perth"].published_target != "")
        assert await on_b.target("perth") == await on_a.target("perth")
        shown = await on_b.resource("perth")
        assert shown.status == pb.RESOURCE_STATUS_ONLINE and shown.capacity.slots_total == 4, shown
        plain = sampler_payload({"pubs": [[PLAIN_BELL, None, 10]], "version": 2})
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await on_b.start_task("perth", plain)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        task = await on_b.start_task("perth", isa_bell(shots=20))
        assert (await on_b.wait(task.id)).state == pb.TASK_STATE_COMPLETED
        await ran_once(ibm, [task.id])
    assert not b.broker.resources["perth"].scheduler.leading


def load_resource(toml: str) -> list[dict[str, Any]]:
    return list(tomllib.loads(toml)["resources"])


async def _started(client: AsyncClient, task_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (await client.task(task_id)).state == pb.TASK_STATE_QUEUED:
        assert time.monotonic() < deadline, f"task {task_id} never started"
        await asyncio.sleep(0.02)


async def _known(daemon: Daemon, task_id: str) -> None:
    await _until(lambda: task_id in daemon.broker._tasks)


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)

