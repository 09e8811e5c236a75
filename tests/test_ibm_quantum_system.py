"""ibm-quantum-system resources through qrmid to the IBM Quantum System API emulator and a real S3 (moto)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import grpc
import pytest
from daemons import config, running
from ibm_services import emulator, ibm_services, record
from qiskit import QuantumCircuit, qasm3, transpile

from qrmid.client import AsyncClient, TaskFailed, estimator_payload, sampler_payload
from qrmid.emulators.launch import Proc
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

API_KEY = "qrmid-test-key"
CRN = "crn:v1:local:qrmid-tests"
BUCKET = "qrmid-jobs"
BACKENDS = ["perth", "busy", "reserved", "flaky", "down", "slow", "lossy"]
# The service's order of the duplicate-id and lanes checks is not documented: the adapter is tested against both.
ORDERS = ["duplicate-first", "lanes-first"]


@pytest.fixture(scope="module", params=ORDERS)
def services(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    """The emulator (one backend per test that changes one at run time) and a moto S3 with our bucket."""
    backends = "\n".join(f'[[backends]]\nname = "{name}"\ndevice = "perth"\nseed = 7\nnoise = false\n'
                         f'admission_order = "{request.param}"\n'
                         f'lanes = {{ hpc_workload_manager = 4, ibm_quantum_compute = 2 }}\n' for name in BACKENDS)
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\nstrict_service_crn = true\n{backends}')
    with ibm_services(path, BUCKET) as services:
        yield services


def resource(name: str, services: tuple[Proc, Proc], **extra: Any) -> dict[str, Any]:
    emulator, s3 = services
    return {"type": "ibm-quantum-system", "name": name, "poll_interval": 0.05, "status_interval": 0.2,
            "QRMI_IBM_QS_ENDPOINT": emulator.url, "QRMI_IBM_QS_IAM_ENDPOINT": emulator.url,
            "QRMI_IBM_QS_IAM_APIKEY": API_KEY, "QRMI_IBM_QS_SERVICE_CRN": CRN,
            "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "k", "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": "s",
            "QRMI_IBM_QS_S3_ENDPOINT": s3.url, "QRMI_IBM_QS_S3_BUCKET": BUCKET, "QRMI_IBM_QS_S3_REGION": "us-east-1",
            **extra}


@pytest.fixture
async def qrmid(services: tuple[Proc, Proc]) -> AsyncIterator[AsyncClient]:
    await emulator(services, "DELETE", "/_emulator/faults")
    cfg = config([resource(name, services, retry_deadline_seconds=3) for name in BACKENDS])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        yield client


async def objects(services: tuple[Proc, Proc]) -> set[str]:
    """The keys in the job bucket."""
    s3 = boto3.client("s3", endpoint_url=services[1].url, region_name="us-east-1", aws_access_key_id="k",
                      aws_secret_access_key="s")
    listing = await asyncio.to_thread(s3.list_objects_v2, Bucket=BUCKET)
    return {entry["Key"] for entry in listing.get("Contents", [])}


def isa_bell(shots: int = 200) -> pb.Payload:
    """A Bell circuit transpiled for the device, as the service requires."""
    from qiskit_ibm_runtime.fake_provider import FakePerth

    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    isa = transpile(circuit, FakePerth(), optimization_level=1, seed_transpiler=1)
    return sampler_payload({"pubs": [[qasm3.dumps(isa), None, shots]], "version": 2, "support_qiskit": True})


BELL = isa_bell()


async def test_sampler_and_estimator_end_to_end(qrmid: AsyncClient, services: tuple[Proc, Proc]) -> None:
    target = json.loads(await qrmid.target("perth"))
    assert target["configuration"]["n_qubits"] == 7 and len(target["properties"]["qubits"]) == 7
    task, data = await qrmid.run("perth", BELL)
    assert json.loads(data)["__type__"] == "PrimitiveResult", "the result is the service's own JSON, untouched"
    counts = summarize(data)["pubs"][0]["c"]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 200
    assert f"Job {task.id} completed" in await qrmid.logs(task.id)

    isa = json.loads(BELL.qiskit_primitive.input)["pubs"][0][0].replace("c[0] = measure $0;\n", "").replace(
        "c[1] = measure $1;\n", "")
    _, data = await qrmid.run("perth", estimator_payload({"pubs": [[isa, {"ZZ": 1.0}]], "version": 2}))
    assert summarize(data)["pubs"][0]["evs"] == pytest.approx(1.0, abs=0.1)
    after = await record(services, "perth")
    assert after["stored"] == 0, "every job was deleted once its results were stored"


async def test_non_isa_circuits_are_refused_before_queueing(qrmid: AsyncClient) -> None:
    bell = "OPENQASM 3.0;\ninclude \"stdgates.inc\";\nbit[2] c;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\n"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await qrmid.start_task("perth", sampler_payload({"pubs": [[bell]], "version": 2}))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "instruction 'h' is not in perth's instruction set" in refused.value.details()
    uncoupled = 'OPENQASM 3.0;\ninclude "stdgates.inc";\ncx $0, $6;\n'
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await qrmid.start_task("perth", sampler_payload({"pubs": [[uncoupled]], "version": 2}))
    assert "cx on qubits (0, 6) is not a coupling of perth" in refused.value.details()


async def test_lanes_are_never_exceeded_under_100_concurrent_tasks(qrmid: AsyncClient,
                                                                   services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/backends/busy", {"job_duration_s": 0.2})
    resource = await qrmid.resource("busy")
    assert resource.capacity.slots_total == 4, "slots are the lanes the service grants the HPC workload manager"
    outcomes = await asyncio.gather(*(qrmid.run("busy", isa_bell(shots=20)) for _ in range(100)))
    assert all(task.state == pb.TASK_STATE_COMPLETED for task, _ in outcomes)
    seen = await record(services, "busy")
    assert seen["max_stored"] == 4 and seen["rejected_429"] == 0
    ids = [submission["id"] for submission in seen["submissions"]]
    assert len(ids) == len(set(ids)) == 100, "each task submitted exactly once"
    assert seen["deletes"] == 100 and seen["stored"] == 0


async def test_429_storm_requeues_at_the_head_and_loses_nothing(qrmid: AsyncClient,
                                                               services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/faults",
                   {"rules": [{"status": 429, "method": "POST", "path_prefix": "/v1/jobs", "count": 3}]})
    started = [await qrmid.start_task("flaky", isa_bell(shots=10)) for _ in range(8)]
    finished = [await qrmid.wait(task.id) for task in started]
    assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * 8
    order = [s["id"] for s in (await record(services, "flaky"))["submissions"]]
    assert order == [task.id for task in started], "refused tasks kept their place in the queue"


async def test_reserved_backend_pauses_dispatch(qrmid: AsyncClient, services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/backends/reserved", {"locked": True})
    await asyncio.sleep(0.5)
    resource = await qrmid.resource("reserved")
    assert resource.status == pb.RESOURCE_STATUS_PAUSED and "reserved" in resource.status_reason
    task = await qrmid.start_task("reserved", BELL)
    await asyncio.sleep(0.5)
    assert (await qrmid.task(task.id)).state == pb.TASK_STATE_QUEUED
    await emulator(services, "POST", "/_emulator/backends/reserved", {"locked": False})
    assert (await qrmid.wait(task.id)).state == pb.TASK_STATE_COMPLETED


async def test_token_expiry_and_5xx_bursts_are_survived(qrmid: AsyncClient, services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/tokens/expire")
    await emulator(services, "POST", "/_emulator/faults", {"rules": [{"status": 503, "count": 4}]})
    tasks = await asyncio.gather(*(qrmid.run("flaky", isa_bell(shots=10)) for _ in range(4)))
    assert all(task.state == pb.TASK_STATE_COMPLETED for task, _ in tasks)


async def test_an_outage_longer_than_the_deadline_fails_tasks_clearly(qrmid: AsyncClient,
                                                                     services: tuple[Proc, Proc]) -> None:
    # the outage outlasts the 3 s deadline however late the submission starts; it is lifted below
    await emulator(services, "POST", "/_emulator/faults",
                   {"rules": [{"status": 503, "path_prefix": "/v1/jobs", "seconds": 120}]})
    with pytest.raises(TaskFailed) as failed:
        await qrmid.run("down", BELL)
    assert "POST /v1/jobs kept failing for 3 s: HTTP 503" in failed.value.task.reason
    assert "whether job" in failed.value.task.reason, "the POST may have landed: its fate is said to be unknown"
    assert (await qrmid.resource("perth")).status == pb.RESOURCE_STATUS_ONLINE, "the daemon keeps serving"
    key = f"input_{failed.value.task.id}.json"
    assert key in await objects(services), "kept while the job may exist"
    await emulator(services, "DELETE", "/_emulator/faults")
    task, _ = await qrmid.run("down", BELL)
    assert task.state == pb.TASK_STATE_COMPLETED
    for _ in range(100):  # once the service answers again, the job is found never to have landed
        if key not in await objects(services):
            break
        await asyncio.sleep(0.1)
    assert key not in await objects(services), "the objects of a job known not to exist are removed"


async def test_cancel_while_running_frees_the_lane(qrmid: AsyncClient, services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/backends/slow", {"job_duration_s": 30})
    task = await qrmid.start_task("slow", BELL)
    async for update in qrmid.watch(task.id):
        if update.state == pb.TASK_STATE_RUNNING:
            break
    assert (await record(services, "slow"))["stored"] == 1
    stopped = await qrmid.stop_task(task.id)
    assert stopped.state == pb.TASK_STATE_CANCELLED
    for _ in range(100):
        if (await record(services, "slow"))["stored"] == 0:
            break
        await asyncio.sleep(0.05)
    seen = await record(services, "slow")
    assert (seen["stored"], seen["deletes"]) == (0, 1), "cancelled on the service, then deleted"


async def test_a_lost_answer_to_a_submission_is_found_never_posted_as_new(qrmid: AsyncClient,
                                                                         services: tuple[Proc, Proc]) -> None:
    """The job is stored, its POST answered 503; the retried POST meets a lane held by that very job (429 when
    the service counts lanes first, 409 otherwise): qrmid finds the job and follows it, its objects intact."""
    await emulator(services, "POST", "/_emulator/backends/lossy", {"lanes": 1, "job_duration_s": 0.3})
    statuses = (await emulator(services, "GET", "/_emulator/record"))["submit_statuses"]
    await emulator(services, "POST", "/_emulator/faults", {"rules": [
        {"status": 503, "landed": True, "method": "POST", "path_prefix": "/v1/jobs", "count": 1}]})
    task, data = await qrmid.run("lossy", isa_bell(shots=30))
    assert task.state == pb.TASK_STATE_COMPLETED
    assert sum(summarize(data)["pubs"][0]["c"].values()) == 30, "the job's own results, read before any removal"
    after = (await emulator(services, "GET", "/_emulator/record"))
    seen = after["backends"]["lossy"]
    assert [s["id"] for s in seen["submissions"]] == [task.id], "stored once"
    refused = {code: after["submit_statuses"].get(code, 0) - statuses.get(code, 0) for code in ("409", "429", "503")}
    lanes_first = seen["admission_order"] == "lanes-first"
    assert refused == {"409": 0 if lanes_first else 1, "429": 1 if lanes_first else 0, "503": 1}
    assert [d["id"] for d in seen["deleted"]] == [task.id] and seen["stored"] == 0


async def test_get_target_says_why_the_service_cannot_answer(services: tuple[Proc, Proc]) -> None:
    """Credentials refused: FAILED_PRECONDITION; service unreachable: UNAVAILABLE; each message says so in words,
    never with an internal class name, and holds no secret."""
    refused = resource("refused", services, backend="perth", retry_deadline_seconds=1,
                       QRMI_IBM_QS_IAM_APIKEY="not-the-key-0042")
    gone = resource("gone", services, backend="perth", retry_deadline_seconds=1,
                    QRMI_IBM_QS_ENDPOINT="http://127.0.0.1:1", QRMI_IBM_QS_IAM_ENDPOINT="http://127.0.0.1:1")
    async with running(config([refused, gone])) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.target("refused")
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = error.value.details()
        assert "refused the configured API key (QRMI_IBM_QS_IAM_APIKEY)" in details, details
        assert "Provided API key could not be found" in details and "not-the-key-0042" not in details
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.target("gone")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        details = error.value.details()
        assert "the IBM Quantum System API at http://127.0.0.1:1/ cannot be reached" in details, details
        assert "GaveUp" not in details and "retry later" in details
