"""pasqal-cloud resources through qrmid to the Pasqal Cloud emulator: open-batch packing, cancel inside a batch,
token renewal, outages, timed-out batches, validation against the device spec."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from daemons import config, running
from emulators.pasqal_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    CONFIG,
    PASSWORD,
    PROJECT,
    TIMINGS,
    USERNAME,
    Emulator,
    fetch_device,
    running_emulator,
    sequence,
)
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

from qrmid.backends.base import JobState
from qrmid.backends.pasqal_cloud.packer import job_status
from qrmid.client import AsyncClient, pulser_payload
from qrmid.v1 import quantum_resources_pb2 as pb


@pytest.fixture(scope="module")
def pasqal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator process for the module; each test uses its own device type, as QPUs run one batch at once."""
    with running_emulator(tmp_path_factory.mktemp("pasqal")) as process:
        yield process


@pytest.fixture(autouse=True)
def restore(pasqal: Emulator) -> Iterator[None]:
    """Put the emulator's timings back and clear injected faults after each test."""
    yield
    pasqal.settings(**{key: CONFIG[key] for key in TIMINGS})
    pasqal.control("DELETE", "faults")


def resource(pasqal: Emulator, name: str, device: str, **extra: Any) -> dict[str, Any]:
    """A pasqal-cloud resource on the emulator with the service-account grant and quick polling."""
    return {"type": "pasqal-cloud", "name": name, "device_type": device, "poll_interval": 0.1,
            "status_interval": 0.2, "retry_deadline_seconds": 5, "QRMI_PASQAL_CLOUD_PROJECT_ID": PROJECT,
            "QRMI_PASQAL_CLOUD_BASE_URL": pasqal.url, "QRMI_PASQAL_CLOUD_AUTH_ENDPOINT": f"{pasqal.url}/oauth/token",
            "QRMI_PASQAL_CLOUD_CLIENT_ID": CLIENT_ID, "QRMI_PASQAL_CLOUD_CLIENT_SECRET": CLIENT_SECRET, **extra}


def program(pasqal: Emulator, device: str, atoms: int = 3) -> str:
    """A short one-pulse sequence built on the device the emulator publishes for ``device``."""
    return str(sequence(fetch_device(pasqal.url, device), atoms=atoms, parametrized=False).to_abstract_repr())


async def record(pasqal: Emulator, device: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The emulator's batches and jobs on ``device``."""
    seen = await asyncio.to_thread(pasqal.record)
    batches = [batch for batch in seen["batches"] if batch["device_type"] == device]
    ids = {batch["id"] for batch in batches}
    return batches, [job for job in seen["jobs"] if job["batch_id"] in ids]


async def jobs_on(pasqal: Emulator, device: str, count: int) -> bool:
    """Whether the service holds ``count`` jobs on ``device``."""
    return len((await record(pasqal, device))[1]) == count


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return value


async def all_running(client: AsyncClient, tasks: list[pb.Task]) -> bool:
    states = [(await client.task(task.id)).state for task in tasks]
    return states == [pb.TASK_STATE_RUNNING] * len(tasks)


async def test_concurrent_tasks_are_packed_into_few_batches(pasqal: Emulator) -> None:
    text = program(pasqal, "FRESNEL")
    cfg = config([resource(pasqal, "fresnel", "FRESNEL", max_jobs_per_batch=12)])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        target = json.loads(await client.target("fresnel"))
        assert [entry["device_type"] for entry in target] == ["FRESNEL"]
        assert json.loads(target[0]["specs"])["name"] == "FRESNEL"
        outcomes = await asyncio.gather(*(client.run("fresnel", pulser_payload(text, 10 + i)) for i in range(30)))
    for i, (task, data) in enumerate(outcomes):
        counter = json.loads(data)["counter"]
        assert task.state == pb.TASK_STATE_COMPLETED and sum(counter.values()) == 10 + i
        assert {len(bits) for bits in counter} == {3}
    batches, jobs = await record(pasqal, "FRESNEL")
    assert 3 <= len(batches) <= 5, f"30 tasks at most 12 per batch went into {len(batches)} batches"
    assert all(batch["job_count"] <= 12 and not batch["open"] and batch["status"] == "DONE" for batch in batches)
    assert len({job["id"] for job in jobs}) == len({job["fingerprint"] for job in jobs}) == len(jobs) == 30, \
        "each task became exactly one job"
    assert sorted(job["runs"] for job in jobs) == list(range(10, 40))
    assert (await asyncio.to_thread(pasqal.record))["devices"]["FRESNEL"]["max_batches_at_once"] == 1


async def test_stopping_one_task_cancels_only_its_job(pasqal: Emulator) -> None:
    await asyncio.to_thread(pasqal.settings, job_duration_s=0.5)
    text = program(pasqal, "FRESNEL_CAN1")
    async with running(config([resource(pasqal, "can1", "FRESNEL_CAN1")])) as daemon, \
            AsyncClient(f"unix:{daemon.socket}") as client:
        started = [await client.start_task("can1", pulser_payload(text, runs)) for runs in (11, 12, 13, 14)]
        await eventually(lambda: all_running(client, started))
        await eventually(lambda: jobs_on(pasqal, "FRESNEL_CAN1", 4))
        await client.stop_task(started[2].id)
        finished = [await client.wait(task.id) for task in started]
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED, pb.TASK_STATE_COMPLETED,
                                                     pb.TASK_STATE_CANCELLED, pb.TASK_STATE_COMPLETED]
        assert sum(json.loads(await client.result(started[3].id))["counter"].values()) == 14

        async def completed() -> bool:  # idle and drained: qrmid completes the batch well before its window ends
            batches, _ = await record(pasqal, "FRESNEL_CAN1")
            return [(batch["open"], batch["status"]) for batch in batches] == [(False, "DONE")]

        await eventually(completed)
    batches, jobs = await record(pasqal, "FRESNEL_CAN1")
    assert len(batches) == 1 and batches[0]["job_count"] == 4, "the four tasks shared one batch"
    assert {job["runs"]: job["status"] for job in jobs} == {11: "DONE", 12: "DONE", 13: "CANCELED", 14: "DONE"}


async def test_tasks_complete_across_token_expiry(pasqal: Emulator) -> None:
    await asyncio.to_thread(pasqal.settings, job_duration_s=0.3)
    text = program(pasqal, "EMU_MPS")
    user = resource(pasqal, "mps", "EMU_MPS", PASQAL_USERNAME=USERNAME, PASQAL_PASSWORD=PASSWORD)
    del user["QRMI_PASQAL_CLOUD_CLIENT_ID"], user["QRMI_PASQAL_CLOUD_CLIENT_SECRET"]
    async with running(config([user])) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        started = [await client.start_task("mps", pulser_payload(text, 20)) for _ in range(5)]
        await eventually(lambda: jobs_on(pasqal, "EMU_MPS", 5))
        assert (await asyncio.to_thread(pasqal.control, "POST", "tokens/expire"))["expired"] >= 1
        assert [(await client.wait(task.id)).state for task in started] == [pb.TASK_STATE_COMPLETED] * 5
        task, _ = await client.run("mps", pulser_payload(text, 20))
        assert task.state == pb.TASK_STATE_COMPLETED
    grants = (await asyncio.to_thread(pasqal.record))["token_grants"]
    assert sum(grant["subject"] == "alice" for grant in grants) >= 2, "a new token was fetched after the expiry"


async def test_outage_beyond_the_deadline_fails_tasks_then_service_resumes(pasqal: Emulator) -> None:
    text = program(pasqal, "EMU_FREE")
    cfg = config([resource(pasqal, "free", "EMU_FREE", retry_deadline_seconds=0.5, status_interval=60)])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        # the outage outlasts the 0.5 s deadline however late the submissions start; it is lifted below
        outage = {"rules": [{"status": 503, "path_prefix": "/core-fast", "seconds": 120, "message": "down for repair"}]}
        await asyncio.to_thread(pasqal.control, "POST", "faults", outage)
        started = await asyncio.gather(*(client.start_task("free", pulser_payload(text, 10)) for _ in range(3)))
        failed = [await client.wait(task.id) for task in started]
        assert [task.state for task in failed] == [pb.TASK_STATE_FAILED] * 3
        assert "POST /api/v1/batches kept failing for 0.5 s" in failed[0].reason
        assert "HTTP 503: down for repair" in failed[0].reason
        assert [r.name for r in await client.list_resources()] == ["free"], "the daemon keeps serving"
        await asyncio.to_thread(pasqal.control, "DELETE", "faults")
        outcomes = await asyncio.gather(*(client.run("free", pulser_payload(text, 10)) for _ in range(2)))
        assert all(task.state == pb.TASK_STATE_COMPLETED for task, _ in outcomes)


async def test_timed_out_batch_loses_no_task(pasqal: Emulator) -> None:
    await asyncio.to_thread(pasqal.settings, open_batch_timeout_s=0.3)
    text = program(pasqal, "FRESNEL_SA1")
    cfg = config([resource(pasqal, "sa1", "FRESNEL_SA1", close_when_idle=False, batch_window_seconds=60)])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        first, _ = await client.run("sa1", pulser_payload(text, 10))

        async def timed_out() -> bool:
            batches, _ = await record(pasqal, "FRESNEL_SA1")
            return [batch["status"] for batch in batches] == ["TIMED_OUT"]

        await eventually(timed_out)
        second, _ = await client.run("sa1", pulser_payload(text, 11))
        assert first.state == second.state == pb.TASK_STATE_COMPLETED
    batches, jobs = await record(pasqal, "FRESNEL_SA1")
    assert [batch["job_count"] for batch in batches] == [1, 1], "the second task went into a new batch"
    assert [job["status"] for job in jobs] == ["DONE", "DONE"]


def test_unfinished_jobs_of_a_timed_out_batch_fail_with_that_reason() -> None:
    # The emulator, like the service, times out only batches whose jobs all ended; a job left behind is mapped so.
    status = job_status("PENDING", [], "TIMED_OUT", "b-1")
    assert status.state is JobState.FAILED and "batch b-1 timed out on Pasqal Cloud (TIMED_OUT)" in status.reason
    assert job_status("DONE", [], "TIMED_OUT", "b-1").state is JobState.COMPLETED
    failed = job_status("ERROR", ["Execution failed on the device"], "RUNNING", "b-1")
    assert failed.state is JobState.FAILED and failed.reason.endswith("Execution failed on the device")
    assert job_status("PENDING", None, "RUNNING", "b-1").state is JobState.RUNNING


async def test_invalid_sequences_are_refused_before_queueing(pasqal: Emulator) -> None:
    device = fetch_device(pasqal.url, "FRESNEL8")
    crowded = Sequence(Register.square(9, spacing=5, prefix="q"), dataclasses.replace(device, max_atom_num=200))
    crowded.declare_channel("ryd", "rydberg_global")
    crowded.add(Pulse.ConstantPulse(100, 2.0, 0.0, 0.0), "ryd")
    elsewhere = sequence(AnalogDevice, atoms=2, parametrized=False)
    refused = {
        "81 atoms; FRESNEL8 takes at most 80": pulser_payload(crowded.to_abstract_repr(), 10),
        "job_runs must be between 1 and 2000, not 2001": pulser_payload(program(pasqal, "FRESNEL8"), 2001),
        "built for device 'AnalogDevice'": pulser_payload(elsewhere.to_abstract_repr(), 10),
        "not a valid Pulser abstract representation": pulser_payload('{"version": "1"}', 10),
    }
    async with running(config([resource(pasqal, "fresnel8", "FRESNEL8")])) as daemon, \
            AsyncClient(f"unix:{daemon.socket}") as client:
        for reason, payload in refused.items():
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await client.start_task("fresnel8", payload)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in error.value.details()
    assert await record(pasqal, "FRESNEL8") == ([], []), "nothing reached the service"


async def test_device_availability_sets_the_resource_status(pasqal: Emulator) -> None:
    async with running(config([resource(pasqal, "rd", "FRESNEL_RD")])) as daemon, \
            AsyncClient(f"unix:{daemon.socket}") as client:
        assert (await client.resource("rd")).status == pb.RESOURCE_STATUS_ONLINE
        assert (await client.metadata("rd"))["backend_name"] == "FRESNEL_RD"
        await asyncio.to_thread(pasqal.control, "POST", "devices/FRESNEL_RD", {"availability": "INACTIVE"})
        try:
            paused = await eventually(lambda: _status_is(client, "rd", pb.RESOURCE_STATUS_PAUSED))
            assert "INACTIVE" in paused.status_reason
        finally:
            await asyncio.to_thread(pasqal.control, "POST", "devices/FRESNEL_RD", {"availability": "ACTIVE"})
        await eventually(lambda: _status_is(client, "rd", pb.RESOURCE_STATUS_ONLINE))


async def _status_is(client: AsyncClient, name: str, status: int) -> pb.Resource | None:
    resource = await client.resource(name)
    return resource if resource.status == status else None


async def test_unreachable_service_holds_up_neither_start_up_nor_other_resources(pasqal: Emulator) -> None:
    """A resource whose service refuses connections reads OFFLINE with the failure as its reason and refuses
    tasks as UNAVAILABLE, while the daemon serves and a reachable resource runs."""
    down = resource(pasqal, "down", "FRESNEL_DOWN", retry_deadline_seconds=3600,
                    QRMI_PASQAL_CLOUD_BASE_URL="http://127.0.0.1:1")
    async with asyncio.timeout(60):  # a hang guard: waiting on the retry deadline would take an hour
        async with running(config([down, resource(pasqal, "up", "EMU_TN")])) as daemon, \
                AsyncClient(f"unix:{daemon.socket}") as client:
            offline = await client.resource("down")
            assert offline.status == pb.RESOURCE_STATUS_OFFLINE
            assert offline.status_reason.startswith("status check failed:"), offline.status_reason
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await client.start_task("down", pulser_payload(program(pasqal, "EMU_TN"), 10))
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "spec of device FRESNEL_DOWN has not been read" in error.value.details()
            assert (await client.resource("up")).status == pb.RESOURCE_STATUS_ONLINE
            task = await client.start_task("up", pulser_payload(program(pasqal, "EMU_TN"), 10))
            assert (await client.wait(task.id)).state == pb.TASK_STATE_COMPLETED


async def test_get_target_says_why_the_service_cannot_answer(pasqal: Emulator) -> None:
    """Credentials refused: FAILED_PRECONDITION; service unreachable: UNAVAILABLE; each message says so in words,
    never with an internal class name, and holds no secret."""
    refused = resource(pasqal, "refused", "FRESNEL", retry_deadline_seconds=1,
                       QRMI_PASQAL_CLOUD_CLIENT_SECRET="not-the-secret-0042")
    gone = resource(pasqal, "gone", "FRESNEL", retry_deadline_seconds=1, QRMI_PASQAL_CLOUD_BASE_URL="http://127.0.0.1:1",
                    QRMI_PASQAL_CLOUD_AUTH_ENDPOINT="http://127.0.0.1:1/oauth/token")
    async with running(config([refused, gone])) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.target("refused")
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "refused the client credentials grant" in error.value.details(), error.value.details()
        assert "an admin must fix the resource's credentials" in error.value.details()
        assert "not-the-secret-0042" not in error.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.target("gone")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        details = error.value.details()
        assert "Pasqal Cloud at http://127.0.0.1:1/ cannot be reached" in details, details
        assert "GaveUp" not in details and "retry later" in details
