"""Pools in cluster mode: real member processes on a real PostgreSQL, the pool's members backends of the IBM Quantum
System API emulator (with a real S3). Tasks taken by either cluster member run through the pool and show their
member on both; the pool and its members are dispatched by one cluster member, and a kill -9 of it loses and
repeats nothing by the emulator's own records."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from ibm_services import Services, emulator, ibm_services, record
from postgres import Database
from test_cluster_failover import dispatcher
from test_ibm_quantum_system import API_KEY, BUCKET, CRN, isa_bell
from test_ibm_quantum_system import resource as ibm_resource

from qrmid.client import AsyncClient
from qrmid.ops.config import load
from qrmid.ops.pool_config import dispatch_groups
from qrmid.v1 import quantum_resources_pb2 as pb

BACKENDS = ("east", "west")  # the same device (perth), one lane each
BELL = isa_bell(shots=20)
WAIT = 120.0  # seconds a task may take to end before a test fails rather than hang


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    backends = "".join(f'[[backends]]\nname = "{name}"\ndevice = "perth"\nseed = 7\nnoise = false\n'
                       'lanes = { hpc_workload_manager = 1, ibm_quantum_compute = 1 }\n' for name in BACKENDS)
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n{backends}')
    with ibm_services(path, BUCKET) as found:
        yield found


@pytest.fixture
async def backends(services: Services) -> AsyncIterator[Services]:
    """Every backend online, each job taking ``job_duration_s`` (quick unless a test says otherwise)."""
    for name in BACKENDS:
        await emulator(services, "POST", f"/_emulator/backends/{name}", {"status": "online", "job_duration_s": 0.2})
    yield services
    for name in BACKENDS:
        await emulator(services, "POST", f"/_emulator/backends/{name}", {"status": "online", "job_duration_s": 0.2})


def resources(services: Services) -> str:
    """east and west, and the pool ``twins`` of both."""
    tables = [*(ibm_resource(name, services, status_interval=0.2, retry_deadline_seconds=5) for name in BACKENDS),
              {"type": "pool", "name": "twins", "members": list(BACKENDS)}]
    return "".join("[[resources]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())
                   for table in tables)


async def submissions(services: Services, ids: list[str]) -> Counter[tuple[str, str]]:
    """How often the emulator admitted each of tasks ``ids``, by (backend, task id)."""
    seen = {name: (await record(services, name))["submissions"] for name in BACKENDS}
    return Counter((name, entry["id"]) for name in BACKENDS for entry in seen[name] if entry["id"] in ids)


async def until(check: Any, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.1)


def test_pools_load_in_cluster_mode_and_are_elected_with_their_members(tmp_path: Path) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text('[cluster]\ndsn = "host=db1 dbname=qrmid"\n' + "".join(
        f'[[resources]]\ntype = "noop"\nname = "{name}"\n' for name in ("a", "b", "c", "d")) +
        '[[resources]]\ntype = "pool"\nname = "p"\nmembers = ["a", "b"]\n'
        '[[resources]]\ntype = "pool"\nname = "q"\nmembers = ["c"]\n'
        '[[resources]]\ntype = "pool"\nname = "r"\nmembers = ["b", "c"]\n')
    config = load(path)
    assert config.cluster is not None
    assert dispatch_groups(config.resources) == dict.fromkeys(["a", "b", "c", "q", "r"], "p"), \
        "pools sharing a member are one group, led by the first pool"


async def test_tasks_taken_by_either_member_run_through_the_pool_and_show_their_member_on_both(
        database: Database, backends: Services, tmp_path: Path) -> None:
    with Cluster(database, resources(backends), members=2, tmp=tmp_path) as cluster:
        leader = dispatcher(database, "twins")
        assert {dispatcher(database, name) for name in BACKENDS} == {leader}, "the pool's members follow it"
        views = [AsyncClient(cluster.member(name).address, timeout=60) for name in cluster.names]
        try:
            ids = [(await views[n % 2].start_task("twins", BELL, request_id=f"t{n}")).id for n in range(6)]
            done = [await views[0].wait(task_id, timeout=WAIT) for task_id in ids]
            assert [task.state for task in done] == [pb.TASK_STATE_COMPLETED] * 6, [task.reason for task in done]
            for view in views:
                async def same(view: AsyncClient = view) -> bool:
                    return [(t.state, t.member) for t in [await view.task(task_id) for task_id in ids]] == \
                        [(task.state, task.member) for task in done]
                await until(same, "each member shows every task's member")
        finally:
            for view in views:
                await view.close()
    ran = await submissions(backends, ids)
    assert ran == Counter((task.member, task.id) for task in done), "each ran once, on the member it shows"


async def test_kill_9_of_the_pools_dispatcher_ends_bound_tasks_once_and_runs_the_queued_ones(
        database: Database, backends: Services, tmp_path: Path) -> None:
    for name in BACKENDS:
        await emulator(backends, "POST", f"/_emulator/backends/{name}", {"job_duration_s": 4.0})
    with Cluster(database, resources(backends), members=2, tmp=tmp_path) as cluster:
        victim = dispatcher(database, "twins")
        survivor = next(name for name in cluster.names if name != victim)
        async with AsyncClient(cluster.member(survivor).address, timeout=60) as qrmid:
            ids = [(await qrmid.start_task("twins", BELL, request_id=f"k{n}")).id for n in range(6)]

            async def bound_and_running() -> list[pb.Task]:
                tasks = [await qrmid.task(task_id) for task_id in ids]
                return [task for task in tasks if task.state == pb.TASK_STATE_RUNNING and task.member]

            await until(lambda: _at_least(bound_and_running(), 2), "two tasks bound and running")
            running = {task.id: task.member for task in await bound_and_running()}
            cluster.kill(victim)
            assert dispatcher(database, "twins", exclude=victim) == survivor
            assert {dispatcher(database, name, exclude=victim) for name in BACKENDS} == {survivor}
            done = [await qrmid.wait(task_id, timeout=WAIT) for task_id in ids]
    assert [task.state for task in done] == [pb.TASK_STATE_COMPLETED] * 6, [task.reason for task in done]
    assert {task.id: task.member for task in done if task.id in running} == running, "followed on their member"
    ran = await submissions(backends, ids)
    assert ran == Counter((task.member, task.id) for task in done), "each reached a backend exactly once"


async def _at_least(tasks: Any, count: int) -> bool:
    return len(await tasks) >= count
