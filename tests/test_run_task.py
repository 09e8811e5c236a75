"""RunTask: one call per task, over a real socket to a real daemon (noop and local-qiskit resources): what it
streams, that it is the only call Client.run makes (counted by the daemon's own RPC metrics), idempotent retries,
a cancelled call leaving its task running, ended tasks, large results, refusals, and a SIGKILL right after the
first message."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import grpc
import pytest
from daemons import config, running, short_dir, subprocess_daemon
from test_metrics import scrape

from qrmid.bench.process import wait_serving
from qrmid.client import AsyncClient, Client, TaskFailed, pulser_payload, sampler_payload
from qrmid.daemon import Daemon
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

NOOP = [{"type": "noop", "name": "fast", "slots": 4, "delay_seconds": 0.05},
        {"type": "noop", "name": "slow", "slots": 1, "delay_seconds": 1.0, "queue_limit": 1}]
SEQUENCE = {"version": "1"}
SERVICE = "/qrmid.v1.QuantumResources/"


def wide_sampler(pubs: int, shots: int, qubits: int = 16) -> pb.Payload:
    """Sampler pubs that measure ``qubits`` random bits ``shots`` times each: a result of about
    pubs * shots * qubits / 8 bytes that does not compress."""
    gates = "".join(f"h q[{i}];\n" for i in range(qubits))
    circuit = (f'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[{qubits}] meas;\nqubit[{qubits}] q;\n{gates}'
               "meas = measure q;\n")
    return sampler_payload({"pubs": [[circuit, None, shots]] * pubs, "version": 2, "shots": shots})


@pytest.fixture
async def daemon() -> Daemon:
    async with running(config(NOOP, metrics={"address": "127.0.0.1:0"})) as daemon:
        yield daemon


@pytest.fixture
async def qrmid(daemon: Daemon) -> AsyncClient:
    async with AsyncClient(f"unix:{daemon.socket}") as client:
        yield client


@pytest.fixture
async def stub(daemon: Daemon) -> pb_grpc.QuantumResourcesStub:
    async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        yield pb_grpc.QuantumResourcesStub(channel)


def request(resource: str = "fast", request_id: str = "", payload: pb.Payload | None = None) -> pb.StartTaskRequest:
    return pb.StartTaskRequest(resource=resource, payload=payload or pulser_payload(SEQUENCE, 5),
                               client_request_id=request_id)


async def read_all(call: grpc.aio.UnaryStreamCall) -> list[pb.RunTaskResponse]:
    """The rest of a stream that was read with ``read()`` before."""
    messages = []
    while (message := await call.read()) is not grpc.aio.EOF:
        messages.append(message)
    return messages


async def calls(daemon: Daemon) -> dict[str, float]:
    """How many calls of each QuantumResources method the daemon has answered, by method name."""
    counted: dict[str, float] = {}
    for (name, labels), value in (await scrape(daemon)).items():
        method = dict(labels).get("method", "")
        if name == "qrmid_rpc_duration_seconds_count" and method.startswith(SERVICE):
            counted[method.removeprefix(SERVICE)] = counted.get(method.removeprefix(SERVICE), 0) + value
    return counted


async def test_client_run_is_one_call_streaming_states_then_the_result(daemon: Daemon, qrmid: AsyncClient) -> None:
    seen: list[pb.Task] = []
    task, result = await qrmid.run("fast", pulser_payload(SEQUENCE, 5), on_state=seen.append)
    states = [t.state for t in seen]
    assert states[-1] == pb.TASK_STATE_COMPLETED and states == sorted(set(states)), states
    assert {t.id for t in seen} == {task.id} and task.state == pb.TASK_STATE_COMPLETED
    assert json.loads(result) == {"task": task.id}
    assert await calls(daemon) == {"RunTask": 1}, "one call for the whole task"
    for _ in range(3):
        await qrmid.run("fast", pulser_payload(SEQUENCE, 5))
    assert await calls(daemon) == {"RunTask": 4}


async def test_the_stream_is_the_task_then_its_result_chunks(stub: pb_grpc.QuantumResourcesStub,
                                                            qrmid: AsyncClient) -> None:
    messages = [m async for m in stub.RunTask(request(request_id="r1"))]
    kinds = [m.WhichOneof("update") for m in messages]
    assert kinds == ["task"] * (len(messages) - 1) + ["result_chunk"]
    first, last, chunk = messages[0].task, messages[-2].task, messages[-1].result_chunk
    assert first.client_request_id == "r1" and last.state == pb.TASK_STATE_COMPLETED
    assert last.end_time.ToNanoseconds() > 0
    assert chunk.content_type == "application/json" and chunk.total_size == len(chunk.data)
    assert chunk.data == await qrmid.result(first.id)


async def test_a_task_that_waits_streams_each_state_it_waits_in(stub: pb_grpc.QuantumResourcesStub) -> None:
    ahead = stub.RunTask(request("slow"))
    await ahead.read()
    messages = [m async for m in stub.RunTask(request("slow"))]  # behind it in line for the only slot (1 s a task)
    assert [m.task.state for m in messages[:-1]] == [pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING,
                                                     pb.TASK_STATE_COMPLETED]
    assert messages[-1].WhichOneof("update") == "result_chunk"
    assert (await read_all(ahead))[-1].WhichOneof("update") == "result_chunk"


async def test_a_retry_with_the_same_request_id_reattaches_to_the_task(stub: pb_grpc.QuantumResourcesStub,
                                                                       qrmid: AsyncClient) -> None:
    call = stub.RunTask(request("slow", "again"))
    first = (await call.read()).task
    call.cancel()
    again = [m async for m in stub.RunTask(request("slow", "again"))]
    assert {m.task.id for m in again if m.HasField("task")} == {first.id}
    states = [m.task.state for m in again if m.HasField("task")]
    assert states[-1] == pb.TASK_STATE_COMPLETED and states == sorted(set(states)), states
    assert json.loads(again[-1].result_chunk.data) == {"task": first.id}
    assert [t.id for t in await qrmid.list_tasks()] == [first.id], "one task, not two"
    finished = [m async for m in stub.RunTask(request("slow", "again"))]
    assert [m.WhichOneof("update") for m in finished] == ["task", "result_chunk"], "an ended task: its end, result"


async def test_cancelling_the_call_leaves_the_task_running(stub: pb_grpc.QuantumResourcesStub,
                                                           qrmid: AsyncClient) -> None:
    call = stub.RunTask(request("slow"))
    first = (await call.read()).task
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call.read()
    assert (await qrmid.task(first.id)).state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING)
    assert (await qrmid.wait(first.id, timeout=30)).state == pb.TASK_STATE_COMPLETED
    assert json.loads(await qrmid.result(first.id)) == {"task": first.id}


async def test_a_cancelled_task_ends_the_stream_normally_on_its_state(stub: pb_grpc.QuantumResourcesStub,
                                                                       qrmid: AsyncClient) -> None:
    call = stub.RunTask(request("slow"))
    first = (await call.read()).task
    await qrmid.stop_task(first.id)
    rest = await read_all(call)
    assert await call.code() == grpc.StatusCode.OK
    assert {m.WhichOneof("update") for m in rest} == {"task"}, "no result after a cancelled task"
    assert rest[-1].task.state == pb.TASK_STATE_CANCELLED
    assert rest[-1].task.reason == "stopped by its owner"
    run = asyncio.create_task(qrmid.run("slow", pulser_payload(SEQUENCE, 5)))
    while not (await qrmid.list_tasks(states=[pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING])):
        await asyncio.sleep(0.01)
    [running_task] = await qrmid.list_tasks(states=[pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING])
    await qrmid.stop_task(running_task.id)
    with pytest.raises(TaskFailed, match="cancelled: stopped by its owner") as failed:
        await run
    assert failed.value.task.id == running_task.id


async def test_refusals_are_startasks_codes_and_queue_nothing(stub: pb_grpc.QuantumResourcesStub,
                                                              qrmid: AsyncClient) -> None:
    async def refused(req: pb.StartTaskRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            [m async for m in stub.RunTask(req)]
        return error.value.code(), error.value.details() or ""

    assert (await refused(request("nowhere")))[0] == grpc.StatusCode.NOT_FOUND
    code, message = await refused(pb.StartTaskRequest(payload=pulser_payload(SEQUENCE, 5)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "resource is required" in message
    code, message = await refused(request(request_id="x" * 129))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "client_request_id" in message
    assert (await refused(request(payload=pb.Payload())))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert await qrmid.list_tasks() == []
    running_call = stub.RunTask(request("slow"))
    await running_call.read()
    queued = stub.RunTask(request("slow"))
    await queued.read()
    code, message = await refused(request("slow"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "slow" in message
    assert len(await qrmid.list_tasks()) == 2


def test_launch_returns_once_queued_and_follows_the_task_in_the_background(daemon_address: str) -> None:
    with Client(daemon_address) as client:
        run = client.launch("slow", pulser_payload(SEQUENCE, 5))
        assert run.task.state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING) and run.id  # not waited for
        task, result = run.outcome(timeout=30)
        assert task.state == pb.TASK_STATE_COMPLETED and run.state() == pb.TASK_STATE_COMPLETED
        assert json.loads(result) == {"task": run.id}
        with pytest.raises(grpc.RpcError) as refused:
            client.launch("nowhere", pulser_payload(SEQUENCE, 5))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        run = client.launch("slow", pulser_payload(SEQUENCE, 5))
        with pytest.raises(TimeoutError, match=f"task {run.id} has not finished after 0.01 s"):
            run.outcome(timeout=0.01)
        client.stop_task(run.id)
        with pytest.raises(TaskFailed, match="cancelled"):
            run.outcome(timeout=30)
        assert run.state() == pb.TASK_STATE_CANCELLED


@pytest.fixture
def daemon_address() -> str:
    """A daemon in its own process (blocking clients need a loop of their own), on a fresh socket."""
    noop = "".join(f'[[resources]]\ntype = "noop"\nname = "{r["name"]}"\nslots = {r["slots"]}\n'
                   f'delay_seconds = {r["delay_seconds"]}\n' for r in NOOP)
    with subprocess_daemon(noop) as (address, _):
        yield address


def test_a_large_result_comes_in_chunks(local_qiskit: str) -> None:
    channel = grpc.insecure_channel(local_qiskit)
    try:
        messages = list(pb_grpc.QuantumResourcesStub(channel).RunTask(
            pb.StartTaskRequest(resource="local-qiskit", payload=wide_sampler(pubs=8, shots=80_000)),
            timeout=300))
    finally:
        channel.close()
    tasks = [m.task for m in messages if m.HasField("task")]
    chunks = [m.result_chunk for m in messages if m.HasField("result_chunk")]
    assert messages[:len(tasks)] == [pb.RunTaskResponse(task=t) for t in tasks], "states first, then the result"
    assert len(chunks) >= 2 and all(len(c.data) <= 1 << 20 for c in chunks)
    assert chunks[0].total_size == sum(len(c.data) for c in chunks) and not chunks[1].total_size
    with Client(local_qiskit) as client:
        assert b"".join(c.data for c in chunks) == client.result(tasks[-1].id)


def test_a_failed_task_ends_the_stream_on_its_failure(local_qiskit_short: str) -> None:
    with Client(local_qiskit_short) as client, pytest.raises(TaskFailed, match="failed") as failed:
        client.run("local-qiskit", wide_sampler(pubs=4, shots=100_000, qubits=20))
    assert failed.value.task.state == pb.TASK_STATE_FAILED and failed.value.task.reason


@pytest.fixture
def local_qiskit() -> str:
    with subprocess_daemon('[[resources]]\ntype = "local-qiskit"\nname = "local-qiskit"\nslots = 1\n') as (address, _):
        yield address


@pytest.fixture
def local_qiskit_short() -> str:
    """local-qiskit whose simulations may run a hundredth of a second."""
    with subprocess_daemon('[[resources]]\ntype = "local-qiskit"\nname = "local-qiskit"\nslots = 1\n'
                           "max_run_seconds = 0.01\n") as (address, _):
        yield address


def test_the_first_message_means_a_restarted_daemon_finds_the_task() -> None:
    """The daemon is killed with SIGKILL right after RunTask's first message; restarted on the same journal, it
    knows the task, and the same request id re-attaches to it."""
    scratch = short_dir()
    sock, journal = scratch / "d.sock", scratch / "journal.db"
    cfg = scratch / "d.toml"
    cfg.touch(mode=0o600)
    cfg.write_text(f'[daemon]\nsocket = "{sock}"\n[journal]\npath = "{journal}"\n[[resources]]\ntype = "noop"\n'
                   'name = "slow"\nslots = 1\ndelay_seconds = 0.5\n')
    process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(cfg)])
    try:
        wait_serving(f"unix:{sock}", process=process)
        channel = grpc.insecure_channel(f"unix:{sock}")
        call = pb_grpc.QuantumResourcesStub(channel).RunTask(request("slow", "survives"))
        first = next(call).task
        process.send_signal(signal.SIGKILL)
        process.wait()
        channel.close()
    finally:
        if process.poll() is None:
            process.kill()
    process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(cfg)])
    try:
        wait_serving(f"unix:{sock}", process=process)
        with Client(f"unix:{sock}") as client:
            assert client.task(first.id).id == first.id
            task, result = client.run("slow", pulser_payload(SEQUENCE, 5), request_id="survives")
            assert task.id == first.id and json.loads(result) == {"task": first.id}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
