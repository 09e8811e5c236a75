"""The next IBM job's input is stored in S3 while every lane is busy, so that a freed lane gets its POST at once.
A staged task that is cancelled or refused leaves no object behind, and a daemon killed (``kill -9``) between the
staging and the POST repeats nothing: checked against the emulator's and S3's own records."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from daemons import config, running
from ibm_services import emulator, ibm_services
from test_ibm_quantum_system import API_KEY, BUCKET, CRN, isa_bell, objects, resource
from test_submit_crash import daemon

from qrmid.client import AsyncClient
from qrmid.emulators.launch import Proc
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    """One lane, so that the second task waits staged while the first runs."""
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "perth"\n'
                    'device = "perth"\nseed = 7\nnoise = false\nadmission_order = "lanes-first"\n'
                    'lanes = { hpc_workload_manager = 1, ibm_quantum_compute = 0 }\n')
    with ibm_services(path, BUCKET) as services:
        yield services


async def submitted(services: tuple[Proc, Proc]) -> list[str]:
    return [s["id"] for s in (await emulator(services, "GET", "/_emulator/record"))["backends"]["perth"]["submissions"]]


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``check()`` to hold, for at most 30 s."""
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still not so after 30 s: {what}")


async def posted(services: tuple[Proc, Proc], job_id: str) -> bool:
    return job_id in await submitted(services)


async def stored(services: tuple[Proc, Proc], key: str | None = None) -> bool:
    """Whether S3 holds ``key`` (any object when None)."""
    keys = await objects(services)
    return bool(keys) if key is None else key in keys


async def gone(services: tuple[Proc, Proc], key: str | None = None) -> bool:
    return not await stored(services, key)


async def staged_behind_a_running_job(client: AsyncClient, services: tuple[Proc, Proc]) -> tuple[str, str]:
    """A running task on the one lane and a second one staged behind it: (running id, staged id)."""
    first = await client.start_task("perth", isa_bell(shots=10))
    await until(lambda: posted(services, first.id), "the first job is posted")
    second = await client.start_task("perth", isa_bell(shots=11))
    await until(lambda: stored(services, f"input_{second.id}.json"), "the second task's input is staged")
    assert second.id not in await submitted(services), "staged only: the lane is still held by the first job"
    return first.id, second.id


async def test_a_staged_task_cancelled_before_its_post_leaves_no_object(services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/backends/perth", {"job_duration_s": 60})
    async with running(config([resource("perth", services, lanes=1)])) as qrmid, \
            AsyncClient(f"unix:{qrmid.socket}") as client:
        first, second = await staged_behind_a_running_job(client, services)
        assert (await client.stop_task(second)).state == pb.TASK_STATE_CANCELLED
        await until(lambda: gone(services, f"input_{second}.json"), "the staged input is removed")
        assert (await client.stop_task(first)).state == pb.TASK_STATE_CANCELLED
        await until(lambda: gone(services), "every object is removed")
    assert second not in await submitted(services), "a cancelled staged task is never posted"


async def test_a_staged_task_refused_at_its_post_fails_and_leaves_no_object(services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/backends/perth", {"job_duration_s": 4})
    async with running(config([resource("perth", services, lanes=1)])) as qrmid, \
            AsyncClient(f"unix:{qrmid.socket}") as client:
        first, second = await staged_behind_a_running_job(client, services)
        await emulator(services, "POST", "/_emulator/faults", {"rules": [
            {"status": 400, "method": "POST", "path_prefix": "/v1/jobs", "count": 1, "message": "refused here"}]})
        assert (await client.wait(first)).state == pb.TASK_STATE_COMPLETED  # its lane freed, the staged task posted
        refused = await client.wait(second)
        assert refused.state == pb.TASK_STATE_FAILED and "refused here" in refused.reason
        await until(lambda: gone(services), "every object is removed")
    await emulator(services, "DELETE", "/_emulator/faults")


async def test_kill_9_between_staging_and_post_repeats_nothing(services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/backends/perth", {"job_duration_s": 3})
    qrmid = daemon(services)
    try:
        qrmid.start()
        async with AsyncClient(qrmid.address) as client:
            first, second = await staged_behind_a_running_job(client, services)
        qrmid.kill()
        assert second not in await submitted(services), "killed with the second task staged, not posted"

        qrmid.start()
        async with AsyncClient(qrmid.address, timeout=300) as client:
            for task_id, shots in ((first, 10), (second, 11)):
                assert (await client.wait(task_id)).state == pb.TASK_STATE_COMPLETED
                counts = summarize(await client.result(task_id))["pubs"][0]["c"]
                assert sum(counts.values()) == shots, "each task has its own job's result"
        record = (await emulator(services, "GET", "/_emulator/record"))["backends"]["perth"]
        mine = [s for s in await submitted(services) if s in (first, second)]
        assert sorted(mine) == sorted([first, second]), "each job stored exactly once"
        assert record["rejected_409_duplicate"] == 0
        await until(lambda: gone(services), "every object is removed once its job is released")
    finally:
        qrmid.stop()

