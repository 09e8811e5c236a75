"""The gRPC API in-process over a real Unix socket: status codes, streams, leases, health and reflection."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import grpc
import pytest
from daemons import config, running
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from qrmid.client import AsyncClient, TaskFailed, pulser_payload, sampler_payload
from qrmid.v1 import quantum_resources_pb2 as pb

NOOP = [{"type": "noop", "name": "fast", "slots": 4},
        {"type": "noop", "name": "slow", "slots": 1, "delay_seconds": 30, "queue_limit": 2}]
SEQUENCE = {"version": "1"}


@pytest.fixture
async def qrmid() -> AsyncClient:
    cfg = config(NOOP, leases={"default_ttl_seconds": 60})
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        yield client


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value.code(), error.value.details() or ""


async def test_resources_are_listed_with_status_and_capacity(qrmid: AsyncClient) -> None:
    listed = await qrmid.list_resources()
    assert [(r.name, r.type, r.status, r.capacity.slots_total, r.capacity.slots_free) for r in listed] == [
        ("fast", "noop", pb.RESOURCE_STATUS_ONLINE, 4, 4), ("slow", "noop", pb.RESOURCE_STATUS_ONLINE, 1, 1)]
    assert list(listed[0].payload_kinds) == [pb.PAYLOAD_KIND_QISKIT_PRIMITIVE, pb.PAYLOAD_KIND_PULSER_SEQUENCE]
    assert json.loads(await qrmid.target("fast"))["name"] == "fast"


async def test_a_task_runs_and_every_state_is_streamed(qrmid: AsyncClient) -> None:
    task = await qrmid.start_task("fast", pulser_payload(SEQUENCE, 5), request_id="r1")
    states = [t.state async for t in qrmid.watch(task.id)]
    assert states == [pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING, pb.TASK_STATE_COMPLETED]
    done = await qrmid.task(task.id)
    assert done.create_time.ToNanoseconds() <= done.start_time.ToNanoseconds() <= done.end_time.ToNanoseconds()
    assert done.client_request_id == "r1" and done.payload_kind == pb.PAYLOAD_KIND_PULSER_SEQUENCE
    assert json.loads(await qrmid.result(task.id)) == {"task": task.id}
    assert await qrmid.logs(task.id) == "noop\n"
    assert (await qrmid.start_task("fast", pulser_payload(SEQUENCE, 5), request_id="r1")).id == task.id


async def test_unknown_names_are_not_found(qrmid: AsyncClient) -> None:
    assert await code_of(qrmid.resource("nope")) == (grpc.StatusCode.NOT_FOUND,
                                                     "no resource named 'nope' (known: fast, slow)")
    assert (await code_of(qrmid.task("0000")))[0] == grpc.StatusCode.NOT_FOUND
    assert (await code_of(qrmid.result("0000")))[0] == grpc.StatusCode.NOT_FOUND
    assert (await code_of(qrmid.start_task("nope", pulser_payload(SEQUENCE, 1))))[0] == grpc.StatusCode.NOT_FOUND
    assert (await code_of(qrmid.release("no-such-token")))[0] == grpc.StatusCode.NOT_FOUND


async def test_malformed_requests_are_invalid_arguments(qrmid: AsyncClient) -> None:
    assert await code_of(qrmid.start_task("fast", pb.Payload())) == (
        grpc.StatusCode.INVALID_ARGUMENT, "payload is empty: set qiskit_primitive or pulser_sequence")
    assert await code_of(qrmid.task("")) == (grpc.StatusCode.INVALID_ARGUMENT, "task_id is required")
    assert await code_of(qrmid.start_task("", pulser_payload(SEQUENCE, 1))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "resource is required")


async def test_result_of_an_unfinished_task_is_a_failed_precondition(qrmid: AsyncClient) -> None:
    task = await qrmid.start_task("slow", pulser_payload(SEQUENCE, 1))
    code, message = await code_of(qrmid.result(task.id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "only completed tasks have results" in message
    stopped = await qrmid.stop_task(task.id)
    assert (stopped.state, stopped.reason) == (pb.TASK_STATE_CANCELLED, "stopped by its owner")
    code, message = await code_of(qrmid.result(task.id))
    assert (code, message) == (grpc.StatusCode.FAILED_PRECONDITION,
                               f"task {task.id} is cancelled: stopped by its owner; only completed tasks have results")
    again = await qrmid.stop_task(task.id)
    assert again.state == pb.TASK_STATE_CANCELLED


async def test_a_full_queue_is_resource_exhausted_and_reports_positions(qrmid: AsyncClient) -> None:
    running_task = await qrmid.start_task("slow", pulser_payload(SEQUENCE, 1))
    async for update in qrmid.watch(running_task.id):
        if update.state == pb.TASK_STATE_RUNNING:
            break
    queued = [await qrmid.start_task("slow", pulser_payload(SEQUENCE, 1)) for _ in range(2)]
    assert [(await qrmid.task(t.id)).queue_position for t in queued] == [1, 2]
    code, message = await code_of(qrmid.start_task("slow", pulser_payload(SEQUENCE, 1)))
    assert (code, message) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                               "the queue of resource 'slow' is full (2 tasks waiting); retry later")
    resource = await qrmid.resource("slow")
    assert (resource.queue_length, resource.running_tasks, resource.capacity.slots_free) == (2, 1, 0)
    assert (await qrmid.resource("fast")).status == pb.RESOURCE_STATUS_ONLINE, "the daemon keeps serving"


async def test_watchers_all_see_a_cancellation(qrmid: AsyncClient) -> None:
    task = await qrmid.start_task("slow", pulser_payload(SEQUENCE, 1))

    async def last_state() -> int:
        return [t.state async for t in qrmid.watch(task.id)][-1]

    watchers = [asyncio.create_task(last_state()) for _ in range(5)]
    await asyncio.sleep(0.1)
    await qrmid.stop_task(task.id)
    assert await asyncio.gather(*watchers) == [pb.TASK_STATE_CANCELLED] * 5


async def test_lease_acquire_and_release(qrmid: AsyncClient) -> None:
    lease = await qrmid.acquire("slow", slurm_job_id="77", ttl_seconds=30)
    assert lease.token and lease.id and lease.slurm_job_id == "77"
    assert 29 <= lease.expire_time.seconds - lease.create_time.seconds <= 30
    task = await qrmid.start_task("slow", pulser_payload(SEQUENCE, 1), lease_token=lease.token)
    assert (task.lease_id, task.slurm_job_id) == (lease.id, "77")
    released = await qrmid.release(lease.token)
    assert (released.lease.id, released.lease.token, released.cancelled_tasks) == (lease.id, "", 1)
    assert (await qrmid.task(task.id)).state == pb.TASK_STATE_CANCELLED
    code, _ = await code_of(qrmid.start_task("slow", pulser_payload(SEQUENCE, 1), lease_token=lease.token))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_client_run_raises_task_failed_when_its_lease_is_released(qrmid: AsyncClient) -> None:
    lease = await qrmid.acquire("slow")
    run = asyncio.create_task(qrmid.run("slow", sampler_payload({"pubs": [], "version": 2}), lease_token=lease.token))
    while not (await qrmid.resource("slow")).running_tasks:
        await asyncio.sleep(0.02)
    await qrmid.release(lease.token)
    with pytest.raises(TaskFailed, match="cancelled: its lease was released"):
        await run


async def test_health_and_reflection() -> None:
    cfg = config(NOOP)
    async with running(cfg) as daemon:
        assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
        async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "qrmid.v1.QuantumResources"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            services = {s.name async for reply in replies for s in reply.list_services_response.service}
            assert {"qrmid.v1.QuantumResources", "grpc.health.v1.Health"} <= services


async def test_list_leases_shows_live_leases_without_tokens_and_filters(qrmid: AsyncClient) -> None:
    first = await qrmid.acquire("slow", slurm_job_id="41")
    second = await qrmid.acquire("fast", slurm_job_id="42")
    third = await qrmid.acquire("slow")
    listed = await qrmid.list_leases()
    assert [(lease.id, lease.resource, lease.slurm_job_id, lease.token) for lease in listed] == [
        (first.id, "slow", "41", ""), (second.id, "fast", "42", ""), (third.id, "slow", "", "")]
    assert listed[0].owner == first.owner and listed[0].expire_time == first.expire_time
    assert [lease.id for lease in await qrmid.list_leases(resource="slow")] == [first.id, third.id]
    assert [lease.id for lease in await qrmid.list_leases(slurm_job_id="42")] == [second.id]
    assert await qrmid.list_leases(resource="slow", slurm_job_id="42") == []
    await qrmid.release(first.token)
    assert [lease.id for lease in await qrmid.list_leases()] == [second.id, third.id]
