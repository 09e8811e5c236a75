"""Cluster mode with real member processes on a real PostgreSQL, against the IBM and Pasqal emulators: the
dispatcher killed with SIGKILL mid-run, and PostgreSQL restarted mid-run, lose and repeat nothing by the emulators'
own counts, never overfill the IBM lanes, and keep the users' shares of dispatches fair."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from emulators.pasqal_fixtures import Emulator, running_emulator
from ibm_services import Services, record
from postgres import Database
from test_ibm_quantum_system import isa_bell
from test_pasqal_cloud import program
from test_pasqal_cloud import resource as pasqal_resource
from test_recovery import ibm_resource, perth

from qrmid.client import AsyncClient, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.v1 import quantum_resources_pb2 as pb

USERS = ("alice", "bob", "carol")
TASKS_PER_USER = 100


@pytest.fixture(scope="module")
def ibm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with perth(tmp_path_factory.mktemp("ibm")) as services:
        yield services


@pytest.fixture(scope="module")
def pasqal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with running_emulator(tmp_path_factory.mktemp("pasqal"), job_duration_s=0.3) as process:
        yield process


def dispatcher(database: Database, resource: str, timeout: float = 30.0, exclude: str = "") -> str:
    """The member dispatching ``resource`` now (other than ``exclude``): the one named in its epoch row that holds
    its lock."""
    deadline = time.monotonic() + timeout
    while True:
        with database.connect() as conn:
            row = conn.execute(
                "SELECT dispatcher FROM resource_epoch e WHERE resource = %s AND EXISTS (SELECT 1 FROM pg_locks l "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.objid::bigint = e.lock_key)",
                (resource,)).fetchone()
        if row and row[0] != exclude:
            return str(row[0])
        assert time.monotonic() < deadline, f"no member dispatches {resource}"
        time.sleep(0.1)


def clients(cluster: Cluster, user: str) -> list[AsyncClient]:
    """One client of ``user`` per member, each trying its own member first, then the others."""
    members = cluster.tcp_address.split(",")
    auth = ClientAuth.resolve("token", token_file=cluster.user_token_files[user])
    return [AsyncClient(",".join(members[n:] + members[:n]), timeout=300, auth=auth) for n in range(len(members))]


async def submit(cluster: Cluster, user: str, payload: Callable[[int], pb.Payload], count: int,
                 resource: str) -> list[str]:
    """``count`` tasks of ``user`` (the n-th runs ``payload(n)``), round-robin over the members, each with its own
    request id."""
    own = clients(cluster, user)
    try:
        return [(await own[n % len(own)].start_task(resource, payload(n), request_id=f"{user}-{n}")).id
                for n in range(count)]
    finally:
        for client in own:
            await client.close()


async def finish(cluster: Cluster, ids: list[str]) -> list[pb.Task]:
    auth = ClientAuth.resolve("token", token_file=cluster.token_file)
    async with AsyncClient(cluster.tcp_address, timeout=600, auth=auth) as admin:
        return list(await asyncio.gather(*(admin.wait(task_id) for task_id in ids)))


async def started(cluster: Cluster, ids: list[str]) -> int:
    auth = ClientAuth.resolve("token", token_file=cluster.token_file)
    async with AsyncClient(cluster.tcp_address, timeout=60, auth=auth) as admin:
        return sum([(await admin.task(task_id)).state != pb.TASK_STATE_QUEUED for task_id in ids])


async def test_kill_9_of_the_dispatcher_mid_run_loses_and_repeats_no_ibm_task_and_keeps_shares_fair(
        database: Database, ibm: Services, tmp_path: Path) -> None:
    with Cluster(database, ibm_resource(ibm), members=3, tmp=tmp_path, users=USERS) as cluster:
        victim = dispatcher(database, "perth")
        bell = isa_bell(shots=20)
        submitting = asyncio.gather(*(submit(cluster, user, lambda n: bell, TASKS_PER_USER, "perth")
                                      for user in USERS))
        await asyncio.sleep(3)  # some submitted and dispatched, most still to come
        cluster.kill(victim)
        killed_at = time.time()
        by_user = await submitting
        ids = [task_id for own in by_user for task_id in own]
        finished = await finish(cluster, ids)
        successor = dispatcher(database, "perth")
    assert successor != victim
    assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * len(ids), \
        Counter(task.reason for task in finished if task.state != pb.TASK_STATE_COMPLETED)
    assert any(task.start_time.ToSeconds() < killed_at for task in finished), "the victim had dispatched some"
    seen = await record(ibm, "perth")
    submitted = Counter(entry["id"] for entry in seen["submissions"] if entry["id"] in set(ids))
    assert submitted == Counter(ids), "every task reached the backend exactly once"
    assert seen["max_stored"] <= seen["lanes"], seen["max_stored"]
    assert seen["rejected_429"] == 0, "no member submitted to a full backend"
    owner = {task_id: user for user, own in zip(USERS, by_user, strict=True) for task_id in own}
    order = [owner[task.id] for task in sorted(finished, key=lambda task: task.start_time.ToNanoseconds())]
    contested = order[:min(len(order) - order[::-1].index(user) for user in USERS)]  # all three still had work
    shares = {user: contested.count(user) / len(contested) for user in USERS}
    print(f"shares of the first {len(contested)} dispatches: {shares}")
    assert all(0.23 <= share <= 0.43 for share in shares.values()), shares


async def test_kill_9_of_the_dispatcher_mid_run_loses_and_repeats_no_pasqal_job(
        database: Database, pasqal: Emulator, tmp_path: Path) -> None:
    settings = pasqal_resource(pasqal, "fresnel", "FRESNEL", slots=8, max_jobs_per_batch=5)
    toml = "[[resources]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    text = program(pasqal, "FRESNEL")
    with Cluster(database, toml, members=3, tmp=tmp_path, users=USERS) as cluster:
        victim = dispatcher(database, "fresnel")
        # each task's run count tells its job apart in the emulator's record: 10 + 20 * user + n
        submitting = asyncio.gather(*(submit(cluster, user, lambda n, u=u: pulser_payload(text, 10 + 20 * u + n), 20,
                                             "fresnel") for u, user in enumerate(USERS)))
        ids = [task_id for own in await submitting for task_id in own]
        while await started(cluster, ids) < 10:
            await asyncio.sleep(0.1)
        cluster.kill(victim)
        finished = await finish(cluster, ids)
    assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * len(ids), \
        Counter(task.reason for task in finished if task.state != pb.TASK_STATE_COMPLETED)
    seen = await asyncio.to_thread(pasqal.record)
    batches = {batch["id"] for batch in seen["batches"] if batch["device_type"] == "FRESNEL"}
    runs = sorted(job["runs"] for job in seen["jobs"] if job["batch_id"] in batches)
    assert runs == list(range(10, 70)), "every task became exactly one job"


async def test_postgresql_restarted_mid_run_loses_nothing_and_the_members_serve_on(
        database: Database, ibm: Services, tmp_path: Path) -> None:
    with Cluster(database, ibm_resource(ibm), members=3, tmp=tmp_path, users=USERS) as cluster:
        bell = isa_bell(shots=20)
        first = await submit(cluster, "alice", lambda n: bell, 30, "perth")
        while await started(cluster, first) < 5:
            await asyncio.sleep(0.1)
        await asyncio.to_thread(database.server.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(database.server.start)
        second = await submit(cluster, "bob", lambda n: bell, 30, "perth")
        finished = await finish(cluster, first + second)
        assert all(member.running for member in map(cluster.member, cluster.names))
    assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * 60, \
        Counter(task.reason for task in finished if task.state != pb.TASK_STATE_COMPLETED)
    seen = await record(ibm, "perth")
    submitted = Counter(entry["id"] for entry in seen["submissions"] if entry["id"] in set(first + second))
    assert submitted == Counter(first + second), "every task reached the backend exactly once"


async def test_a_hung_dispatcher_loses_its_resource_and_when_it_wakes_up_runs_nothing_twice(
        database: Database, ibm: Services, tmp_path: Path) -> None:
    with Cluster(database, ibm_resource(ibm), members=2, tmp=tmp_path, users=USERS) as cluster:
        victim = dispatcher(database, "perth")
        process = cluster.member(victim).process
        assert process is not None
        bell = isa_bell(shots=20)
        first = await submit(cluster, "alice", lambda n: bell, 20, "perth")
        while await started(cluster, first) < 3:
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGSTOP)  # hung: its sessions stay open, it sends nothing
        stopped_at = time.monotonic()
        try:
            successor = dispatcher(database, "perth", exclude=victim)
            took = time.monotonic() - stopped_at
            second = await submit(cluster, "bob", lambda n: bell, 20, "perth")
        finally:
            process.send_signal(signal.SIGCONT)
        finished = await finish(cluster, first + second)
    assert successor != victim and took <= 10 + 1, f"failover_seconds (10) passed: {took:.1f} s"
    assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * 40, \
        Counter(task.reason for task in finished if task.state != pb.TASK_STATE_COMPLETED)
    seen = await record(ibm, "perth")
    submitted = Counter(entry["id"] for entry in seen["submissions"] if entry["id"] in set(first + second))
    assert submitted == Counter(first + second), "every task reached the backend exactly once"
