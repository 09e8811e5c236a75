"""Exclusive and shared leases, min_slots, and exclusive Acquires waiting in line, against a real daemon over gRPC:
the IBM Quantum System emulator (with a real S3) records when each job held a lane; the noop backend records the order
it was handed tasks in."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from daemons import ROOT, config, running
from ibm_services import emulator, ibm_services, record
from pydantic import ValidationError
from test_ibm_quantum_system import API_KEY, BUCKET, CRN, isa_bell, resource
from test_recovery import Qrmid

from qrmid.backends.payloads import Payload
from qrmid.client import AsyncClient, pulser_payload
from qrmid.client_errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from qrmid.emulators.launch import Proc
from qrmid.ops.config import Config
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

PULSER = pulser_payload({"sequence": "x"}, 1)
LANES = 4


def noop(name: str = "n", slots: int = 2, delay: float = 0.5, **extra: Any) -> dict[str, Any]:
    return {"type": "noop", "name": name, "slots": slots, "delay_seconds": delay, "poll_interval": 0.02, **extra}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    """The IBM emulator with one backend of LANES lanes for on-prem jobs, and a moto S3 holding the job bucket."""
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\nstrict_service_crn = true\n'
                    f'[[backends]]\nname = "excl"\ndevice = "perth"\nseed = 7\nnoise = false\n'
                    f'lanes = {{ hpc_workload_manager = {LANES}, ibm_quantum_compute = 2 }}\n')
    with ibm_services(path, BUCKET) as services:
        yield services


@pytest.fixture
async def ibm(services: tuple[Proc, Proc]) -> AsyncIterator[AsyncClient]:
    await emulator(services, "POST", "/_emulator/backends/excl", {"job_duration_s": 0.4})
    async with running(config([resource("excl", services, min_slots_cap=1)])) as daemon, \
            AsyncClient(f"unix:{daemon.socket}") as client:
        yield client


async def until(check: Any, what: str, seconds: float = 30.0) -> None:
    """Wait until the coroutine function ``check`` returns true."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"still not {what} after {seconds} s"
        await asyncio.sleep(0.02)


async def waiting(client: AsyncClient, name: str, count: int) -> None:
    async def check() -> bool:
        return (await client.resource(name)).exclusive_waiting == count
    await until(check, f"{count} exclusive Acquire(s) waiting on {name}")


async def deleted(services: tuple[Proc, Proc], job_ids: set[str]) -> bool:
    """Whether the emulator deleted every job of ``job_ids``."""
    return job_ids <= {entry["id"] for entry in (await record(services, "excl"))["deleted"]}


def lane_use(seen: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each job's hold on a lane, from the emulator's own record: from its admission to its deletion."""
    admitted = {entry["id"]: entry["time"] for entry in seen["submissions"]}
    return {entry["id"]: (admitted[entry["id"]], entry["time"]) for entry in seen["deleted"]}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = held = 0
    for _, step in events:
        held += step
        peak = max(peak, held)
    return peak


async def test_an_exclusive_lease_runs_alone_on_every_lane_and_a_stream_of_shared_tasks_cannot_starve_it(
        ibm: AsyncClient, services: tuple[Proc, Proc]) -> None:
    before = [await ibm.start_task("excl", isa_bell(shots=10)) for _ in range(LANES + 2)]
    asked = asyncio.create_task(ibm.acquire("excl", slurm_job_id="101", mode="exclusive", wait=120))
    await waiting(ibm, "excl", 1)
    late = [await ibm.start_task("excl", isa_bell(shots=10)) for _ in range(LANES + 2)]  # a stream meanwhile
    assert "an exclusive lease is waiting for the resource" in (await ibm.task(late[0].id)).wait_reason
    lease = await asyncio.wait_for(asked, 120)
    assert lease.mode == pb.LEASE_MODE_EXCLUSIVE and lease.token
    shown = await ibm.resource("excl")
    assert shown.exclusive_lease.id == lease.id and not shown.exclusive_lease.token, "the holder, without its token"
    mine = [await ibm.start_task("excl", isa_bell(shots=10), lease_token=lease.token) for _ in range(2 * LANES)]
    assert (await ibm.task(late[0].id)).wait_reason == \
        "resource excl is held by the exclusive lease of Slurm job 101 (user root)"
    for task in mine:
        assert (await ibm.wait(task.id)).state == pb.TASK_STATE_COMPLETED
    assert [(await ibm.task(task.id)).state for task in late] == [pb.TASK_STATE_QUEUED] * len(late), \
        "others wait meanwhile"
    await ibm.release(lease.token)
    for task in [*before, *late]:
        assert (await ibm.wait(task.id)).state == pb.TASK_STATE_COMPLETED

    await until(lambda: deleted(services, {task.id for task in [*before, *late, *mine]}), "every job deleted")
    held = lane_use(await record(services, "excl"))
    ours = [held[task.id] for task in mine]
    start, end = min(begin for begin, _ in ours), max(finish for _, finish in ours)
    assert most_at_once(ours) == LANES, "the exclusive lease's tasks used every lane"
    for task in [*before, *late]:
        begin, finish = held[task.id]
        assert finish <= start or begin >= end, "no other job held a lane while the exclusive lease's jobs ran"
    assert all(held[task.id][0] >= end for task in late), "shared tasks asked for after the exclusive Acquire " \
        "waited for its lease to end"


async def test_min_slots_keep_an_ibm_lane_for_the_lease_and_no_other_job_is_staged_into_it(
        ibm: AsyncClient, services: tuple[Proc, Proc]) -> None:
    lease = await ibm.acquire("excl", min_slots=1)
    bulk = [await ibm.start_task("excl", isa_bell(shots=10)) for _ in range(4 * LANES)]
    loop = []
    for _ in range(3):
        asked_at = time.time()
        task = await ibm.start_task("excl", isa_bell(shots=10), lease_token=lease.token)
        assert (await ibm.wait(task.id)).state == pb.TASK_STATE_COMPLETED
        loop.append((asked_at, task.id))
    released_at = time.time()
    await ibm.release(lease.token)
    for task in bulk:
        assert (await ibm.wait(task.id)).state == pb.TASK_STATE_COMPLETED

    await until(lambda: deleted(services, {*(task.id for task in bulk), *(task_id for _, task_id in loop)}),
                "every job deleted")
    held = lane_use(await record(services, "excl"))
    assert most_at_once([held[task.id] for task in bulk if held[task.id][0] < released_at]) == LANES - 1, \
        "other jobs held every lane but the one kept for the lease, never that one"
    for asked_at, task_id in loop:
        ahead = [task.id for task in bulk if asked_at < held[task.id][0] < held[task_id][0]]
        assert len(ahead) <= LANES - 1, f"{len(ahead)} other jobs were admitted before the lease's: it waited " \
            "more than one dispatch round"


async def test_exclusive_acquires_are_granted_in_the_order_asked() -> None:
    async with running(config([noop()])) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        for _ in range(2):
            await client.start_task("n", PULSER)
        first = asyncio.create_task(client.acquire("n", slurm_job_id="1", mode="exclusive", wait=60))
        await waiting(client, "n", 1)
        second = asyncio.create_task(client.acquire("n", slurm_job_id="2", mode="exclusive", wait=60))
        await waiting(client, "n", 2)
        granted = await asyncio.wait_for(first, 60)
        assert granted.slurm_job_id == "1"
        shown = await client.resource("n")
        assert shown.exclusive_lease.id == granted.id and shown.exclusive_waiting == 1
        await asyncio.sleep(0.5)
        assert not second.done(), "the second waits while the first holds the resource"
        released_at = time.time()
        await client.release(granted.token)
        after = await asyncio.wait_for(second, 60)
        assert after.slurm_job_id == "2" and after.create_time.ToNanoseconds() / 1e9 >= released_at
        assert (await client.resource("n")).exclusive_waiting == 0


async def test_an_exclusive_lease_that_expires_lets_queued_tasks_start_and_grants_the_next_in_line() -> None:
    async with running(config([noop(delay=0.1)])) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        lease = await client.acquire("n", mode="exclusive", ttl_seconds=1)
        held = await client.start_task("n", PULSER)
        assert (await client.task(held.id)).wait_reason == "resource n is held by the exclusive lease of user root"
        next_in_line = await client.acquire("n", slurm_job_id="8", mode="exclusive", wait=30)
        expired_at = lease.expire_time.ToNanoseconds()
        assert next_in_line.create_time.ToNanoseconds() >= expired_at, "granted once the first one expired"
        await client.release(next_in_line.token)
        ended = await client.wait(held.id)
        assert ended.state == pb.TASK_STATE_COMPLETED and ended.start_time.ToNanoseconds() >= expired_at


async def test_an_exclusive_acquire_that_times_out_names_its_place_in_line_and_what_it_waits_for() -> None:
    async with running(config([noop(slots=1, delay=30)])) as daemon, \
            AsyncClient(f"unix:{daemon.socket}") as client:
        running_task = await client.start_task("n", PULSER)
        await until(lambda: _state_is(client, running_task.id, pb.TASK_STATE_RUNNING), "running")
        ahead = asyncio.create_task(client.acquire("n", mode="exclusive", wait=60))
        await waiting(client, "n", 1)
        with pytest.raises(DeadlineExceeded) as refused:
            await client.acquire("n", mode="exclusive", wait=1)
        message = refused.value.details()
        assert message.startswith("2nd in line for an exclusive lease on n after waiting 1 s; "), message
        assert "1 exclusive Acquire(s) ahead in line" in message
        assert "1 task(s) of other jobs still running" in message
        async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:  # the caller's own deadline
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await pb_grpc.QuantumResourcesStub(channel).Acquire(
                    pb.AcquireRequest(resource="n", mode=pb.LEASE_MODE_EXCLUSIVE), timeout=2)
        assert cut.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "2nd in line for an exclusive lease on n" in (cut.value.details() or ""), "answered before the deadline"
        ahead.cancel()
        await waiting(client, "n", 0)  # a caller that gave up leaves the line
        shared = await client.acquire("n")  # shared leases are granted at once, exclusive ones waiting or not
        assert shared.mode == pb.LEASE_MODE_SHARED


async def _state_is(client: AsyncClient, task_id: str, state: int) -> bool:
    return (await client.task(task_id)).state == state


async def test_min_slots_start_an_interactive_loop_at_once_ahead_of_a_thousand_queued_bulk_tasks() -> None:
    slots = 4
    async with running(config([noop(slots=slots, delay=0.2, min_slots_cap=1)])) as daemon, \
            AsyncClient(f"unix:{daemon.socket}") as client:
        adapter = daemon.broker.resources["n"].adapter
        handed: list[str] = []  # the backend's record: the order it was handed tasks in
        submit = adapter.submit

        async def recorded(task_id: str, payload: Payload) -> str:
            handed.append(task_id)
            return await submit(task_id, payload)
        adapter.submit = recorded  # type: ignore[method-assign]
        bulk = [await client.start_task("n", PULSER) for _ in range(1000)]
        lease = await client.acquire("n", min_slots=1)
        assert lease.min_slots == 1
        bulk_before = len(handed)
        for _ in range(5):
            loop = await client.start_task("n", PULSER, lease_token=lease.token)
            queued_at = len(handed)
            assert (await client.wait(loop.id)).state == pb.TASK_STATE_COMPLETED
            jumped = handed.index(loop.id) - queued_at
            assert jumped <= slots - 1, f"{jumped} bulk tasks went to the backend before the interactive one: it " \
                "waited for more than one dispatch round"
            shown = await client.resource("n")
            assert shown.queue_length > 0 and shown.running_tasks <= slots - 1, "the reserved slot stays free"
        ids = {task.id for task in bulk}
        assert sum(task_id in ids for task_id in handed) > bulk_before, "bulk tasks kept running beside the loop"
        assert handed[:bulk_before] == [task.id for task in bulk][:bulk_before], "bulk tasks kept their order"


async def test_bad_lease_requests_are_refused_with_what_to_do_and_the_daemon_serves_on() -> None:
    async with running(config([noop(slots=4, min_slots_cap=2), noop("plain")])) as daemon, \
            AsyncClient(f"unix:{daemon.socket}") as client:
        with pytest.raises(InvalidArgument) as refused:
            await client.acquire("n", min_slots=3)
        assert "min_slots 3 is above what resource 'n' allows (at most 2" in refused.value.details()
        assert "min_slots_cap" in refused.value.details()
        with pytest.raises(InvalidArgument) as refused:
            await client.acquire("plain", min_slots=1)
        assert "none: its min_slots_cap is 0" in refused.value.details()
        with pytest.raises(InvalidArgument) as refused:
            await client.acquire("n", mode="exclusive", min_slots=1)
        assert "min_slots is for shared leases" in refused.value.details()
        async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await pb_grpc.QuantumResourcesStub(channel).Acquire(pb.AcquireRequest(resource="n", mode=7))  # type: ignore[arg-type]
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "mode: 7 is not a lease mode" in (unknown.value.details() or "")
        await client.acquire("n", min_slots=2)
        with pytest.raises(ResourceExhausted) as full:
            await client.acquire("n", min_slots=2)
        assert "would leave no slot to other tasks" in full.value.details() and "at most 1" in full.value.details()
        assert (await client.acquire("n", min_slots=1)).min_slots == 1
        assert len(await client.list_resources()) == 2


def test_exclusive_wait_settings_are_checked_when_the_config_is_loaded() -> None:
    with pytest.raises(ValidationError) as refused:
        Config.model_validate({"leases": {"exclusive_wait_seconds": 600, "max_exclusive_wait_seconds": 60}})
    assert "exclusive_wait_seconds (600) is longer than max_exclusive_wait_seconds (60)" in str(refused.value)


async def test_a_restart_keeps_each_lease_mode_and_min_slots_and_the_gate_acts_again() -> None:
    cfg = config([noop(slots=4, min_slots_cap=1), noop("other", slots=4, min_slots_cap=1)])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        exclusive = await client.acquire("n", slurm_job_id="7", mode="exclusive", wait=5)
        reserving = await client.acquire("other", min_slots=1)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        leases = {lease.id: lease for lease in await client.list_leases()}
        assert leases[exclusive.id].mode == pb.LEASE_MODE_EXCLUSIVE and leases[exclusive.id].min_slots == 0
        assert leases[reserving.id].mode == pb.LEASE_MODE_SHARED and leases[reserving.id].min_slots == 1
        assert (await client.resource("n")).exclusive_lease.id == exclusive.id
        held = await client.start_task("n", PULSER)
        assert (await client.task(held.id)).wait_reason == \
            "resource n is held by the exclusive lease of Slurm job 7 (user root)"
        await client.release(exclusive.token)
        assert (await client.wait(held.id)).state == pb.TASK_STATE_COMPLETED


async def test_a_lease_once_answered_survives_a_kill_9_with_its_mode_and_min_slots() -> None:
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "n"\nslots = 4\nmin_slots_cap = 1\n')
    try:
        daemon.start()
        async with AsyncClient(daemon.address) as client:
            exclusive = await client.acquire("n", slurm_job_id="3", mode="exclusive", wait=5)
            reserving = await client.acquire("n", min_slots=1)
        daemon.kill()
        daemon.start()
        async with AsyncClient(daemon.address) as client:
            leases = {lease.id: lease for lease in await client.list_leases()}
            assert leases[exclusive.id].mode == pb.LEASE_MODE_EXCLUSIVE
            assert leases[reserving.id].mode == pb.LEASE_MODE_SHARED and leases[reserving.id].min_slots == 1
            assert (await client.resource("n")).exclusive_lease.id == exclusive.id
    finally:
        daemon.stop()


async def test_the_command_line_takes_an_exclusive_lease_and_shows_it() -> None:
    async with running(config([noop()])) as daemon:
        address = f"unix:{daemon.socket}"
        token = (await cli("acquire", "n", "--exclusive", "--wait", "5", "--slurm-job-id", "55",
                           address=address)).stdout.strip()
        resources = (await cli("resources", address=address)).stdout
        assert "held exclusively by Slurm job 55 (user root)" in " ".join(resources.split())
        async with AsyncClient(address) as client:
            lease = (await client.list_leases("n"))[0]
        assert f'"id": "{lease.id}"' in (await cli("resources", "--json", address=address)).stdout
        table = (await cli("leases", address=address)).stdout.splitlines()
        assert table[0].split()[:6] == ["ID", "RESOURCE", "OWNER", "SLURM", "JOB", "MODE"]
        assert table[1].split()[3:6] == ["55", "exclusive", "0"]
        refused = await cli("acquire", "n", "--min-slots", "1", address=address, check=False)
        assert refused.returncode != 0 and "min_slots_cap" in refused.stderr
        await cli("release", token, address=address)


async def cli(*args: str, address: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "qrmid", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env={**os.environ, "QRMID_ADDRESS": address, "COLUMNS": "250"})
    if check:
        assert run.returncode == 0, run.stderr
    return run
