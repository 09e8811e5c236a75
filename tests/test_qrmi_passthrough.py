"""``qrmi`` resources: QRMI's own client (the ``qrmi`` package, unchanged) behind the daemon, end to end over gRPC,
against the IBM Quantum System API emulator with a real S3 (moto), the IBM Quantum Platform REST API emulator
(compute service) and the Pasqal Cloud emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tomli_w
from daemons import config, running
from emulators.pasqal_fixtures import CLIENT_ID, CLIENT_SECRET, PROJECT, Emulator, fetch_device, sequence
from emulators.pasqal_fixtures import CONFIG as PASQAL_CONFIG
from emulators.pasqal_fixtures import start_emulator as start_pasqal
from ibm_services import emulator, ibm_services, record
from qiskit import QuantumCircuit, qasm3, transpile

from qrmid.backends.qrmi_package import QrmiPackage
from qrmid.client import AsyncClient, TaskFailed, pulser_payload, sampler_payload
from qrmid.daemon import Daemon
from qrmid.emulators.launch import Proc, start_emulator
from qrmid.ops.config import ConfigError, load
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

API_KEY = "qrmi-passthrough-key-5f1c"
S3_SECRET = "s3-secret-9a7e"
CRN = "crn:v1:local:qrmi-passthrough"
BUCKET = "qrmi-jobs"
BACKENDS = ["perth", "many", "slow", "failing"]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    backends = "\n".join(f'[[backends]]\nname = "{name}"\ndevice = "perth"\nseed = 7\nnoise = false\n'
                         for name in BACKENDS)
    path = tmp_path_factory.mktemp("qrmi") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\nstrict_service_crn = true\n{backends}')
    with ibm_services(path, BUCKET, S3_SECRET) as services:
        yield services


def resource(name: str, services: tuple[Proc, Proc], **extra: Any) -> dict[str, Any]:
    """A ``qrmi`` resource of QRMI type ibm-quantum-system, with the keys of a qrmi_config.json entry."""
    emulator, s3 = services
    environment = {"QRMI_IBM_QS_ENDPOINT": emulator.url, "QRMI_IBM_QS_IAM_ENDPOINT": emulator.url,
                   "QRMI_IBM_QS_IAM_APIKEY": API_KEY, "QRMI_IBM_QS_SERVICE_CRN": CRN,
                   "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "k", "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": S3_SECRET,
                   "QRMI_IBM_QS_S3_ENDPOINT": s3.url, "QRMI_IBM_QS_S3_BUCKET": BUCKET,
                   "QRMI_IBM_QS_S3_REGION": "us-east-1", "QRMI_JOB_TIMEOUT_SECONDS": 600}
    return {"type": "qrmi", "resource_type": "ibm-quantum-system", "name": name, "poll_interval": 0.1,
            "status_interval": 0.5, "environment": environment, **extra}


@pytest.fixture
async def daemon(services: tuple[Proc, Proc]) -> AsyncIterator[Daemon]:
    cfg = config([resource(name, services, slots=3 if name == "many" else 2) for name in BACKENDS])
    async with running(cfg) as daemon:
        yield daemon


@pytest.fixture
async def qrmid(daemon: Daemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"unix:{daemon.socket}") as client:
        yield client


def bell(shots: int = 100, isa: bool = True) -> pb.Payload:
    from qiskit_ibm_runtime.fake_provider import FakePerth

    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    if isa:
        circuit = transpile(circuit, FakePerth(), optimization_level=1, seed_transpiler=1)
    return sampler_payload({"pubs": [[qasm3.dumps(circuit), None, shots]], "version": 2, "support_qiskit": True})


def adapter(daemon: Daemon, name: str) -> QrmiPackage:
    found = daemon.broker.resources[name].adapter
    assert isinstance(found, QrmiPackage)
    return found


async def test_task_start_status_result_logs_through_qrmi(qrmid: AsyncClient, daemon: Daemon,
                                                          services: tuple[Proc, Proc]) -> None:
    res = await qrmid.resource("perth")
    assert res.status == pb.RESOURCE_STATUS_ONLINE and res.capacity.slots_total == 2
    target = json.loads(await qrmid.target("perth"))
    assert target["configuration"]["backend_name"] == "perth" and len(target["properties"]["qubits"]) == 7
    assert (await qrmid.metadata("perth")) == {"resource_type": "ibm-quantum-system", "backend_name": "perth"}

    task, data = await qrmid.run("perth", bell(200))
    assert json.loads(data)["__type__"] == "PrimitiveResult", "the service's own result text, untouched"
    counts = summarize(data)["pubs"][0]["c"]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 200
    assert "completed" in (await qrmid.logs(task.id)).lower()
    seen = await record(services, "perth")
    assert [s["id"] for s in seen["submissions"]] == [daemon.broker.task(task.id).remote_ref], \
        "the task's remote reference is QRMI's task id (the IBM job id)"
    for _ in range(100):  # the job is deleted once the task's end is journaled, just after it is reported
        if seen["deletes"]:
            break
        await asyncio.sleep(0.1)
        seen = await record(services, "perth")
    assert seen["deletes"] == 1 and seen["stored"] == 0, "QRMI's task_stop deleted the job once its output was read"


async def test_concurrent_tasks_use_one_handle_per_thread(qrmid: AsyncClient, daemon: Daemon,
                                                          services: tuple[Proc, Proc]) -> None:
    outcomes = await asyncio.gather(*(qrmid.run("many", bell(20)) for _ in range(9)))
    assert all(task.state == pb.TASK_STATE_COMPLETED for task, _ in outcomes)
    workers = adapter(daemon, "many").workers.workers
    threads = [worker.thread for worker in workers]
    handles = [worker.handle for worker in workers]
    assert all(thread is not None for thread in threads) and len({t.ident for t in threads if t}) == 3
    assert all(handle is not None for handle in handles) and len({id(h) for h in handles}) == 3, \
        "each worker thread built and used its own QRMI handle"
    for _ in range(100):  # cleanup (QRMI's task_stop) follows the final state
        if all(worker.tasks == 0 for worker in workers):
            break
        await asyncio.sleep(0.05)
    assert [worker.tasks for worker in workers] == [0, 0, 0], "every task was unpinned after its cleanup"
    seen = await record(services, "many")
    assert len({s["id"] for s in seen["submissions"]}) == 9 and seen["stored"] == 0


async def test_a_task_stays_on_the_handle_that_started_it(qrmid: AsyncClient, daemon: Daemon,
                                                          services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/backends/slow", {"job_duration_s": 1.5})
    started = [await qrmid.start_task("slow", bell(10)) for _ in range(2)]
    for task in started:
        await _running(qrmid, task.id)
    workers = adapter(daemon, "slow").workers
    pinned = [workers.worker_of(daemon.broker.task(task.id).remote_ref) for task in started]
    assert pinned[0] is not None and pinned[1] is not None and pinned[0] is not pinned[1], \
        "two tasks in flight on two handles"
    assert [(await qrmid.wait(task.id)).state for task in started] == [pb.TASK_STATE_COMPLETED] * 2


async def test_cancel_stops_the_task_on_the_backend(qrmid: AsyncClient, services: tuple[Proc, Proc]) -> None:
    await emulator(services, "POST", "/_emulator/backends/slow", {"job_duration_s": 30})
    task = await _running(qrmid, (await qrmid.start_task("slow", bell(10))).id)
    stopped = await qrmid.stop_task(task.id)
    assert stopped.state == pb.TASK_STATE_CANCELLED
    for _ in range(100):
        if (await record(services, "slow"))["stored"] == 0:
            break
        await asyncio.sleep(0.05)
    seen = await record(services, "slow")
    assert seen["stored"] == 0 and seen["deletes"] >= 1, "QRMI's task_stop cancelled and deleted the job"
    assert (await qrmid.resource("slow")).status == pb.RESOURCE_STATUS_ONLINE, "the daemon keeps serving"


async def test_failures_carry_the_vendor_reason_without_secrets(qrmid: AsyncClient,
                                                                services: tuple[Proc, Proc]) -> None:
    with pytest.raises(TaskFailed) as failed:  # not in the device's instruction set: the job runs and fails
        await qrmid.run("failing", bell(10, isa=False))
    assert "unknown instruction: h" in failed.value.task.reason, failed.value.task.reason
    await emulator(services, "POST", "/_emulator/faults",
                   {"rules": [{"status": 400, "method": "POST", "path_prefix": "/v1/jobs", "count": 1}]})
    try:
        with pytest.raises(TaskFailed) as failed:  # refused at submission
            await qrmid.run("failing", bell(10))
    finally:
        await emulator(services, "DELETE", "/_emulator/faults")
    reason = failed.value.task.reason
    assert "InvalidInputError" in reason and "injected fault" in reason, reason
    assert API_KEY not in reason and S3_SECRET not in reason


async def test_invalid_payloads_are_refused_before_queueing(qrmid: AsyncClient, services: tuple[Proc, Proc]) -> None:
    before = len((await record(services, "perth"))["submissions"])
    bad = [(sampler_payload("{not json"), "not valid JSON"),
           (pb.Payload(qiskit_primitive=pb.QiskitPrimitive(program_id="noiselearner", input="{}")),
            "program_id must be one of sampler, estimator"),
           (sampler_payload({"pubs": [], "version": 2}), "non-empty 'pubs'"),
           (pulser_payload("{}", 10), "takes qiskit_primitive payloads"),
           (bell(20_000_000), "shots")]
    for payload, message in bad:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await qrmid.start_task("perth", payload)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert message in refused.value.details(), refused.value.details()
    assert len((await record(services, "perth"))["submissions"]) == before, "nothing reached the backend"
    task, _ = await qrmid.run("perth", bell(10))
    assert task.state == pb.TASK_STATE_COMPLETED, "the daemon keeps serving"


async def test_wrong_credentials_make_the_resource_offline_without_showing_them(services: tuple[Proc, Proc]) -> None:
    wrong = resource("perth", services, status_interval=60)
    wrong["environment"]["QRMI_IBM_QS_IAM_APIKEY"] = "wrong-key-3c9d"
    async with running(config([wrong])) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        res = await client.resource("perth")
    assert res.status == pb.RESOURCE_STATUS_OFFLINE and res.status_reason, res
    assert "wrong-key-3c9d" not in res.status_reason and S3_SECRET not in res.status_reason


def test_config_errors_name_keys_and_never_values(tmp_path: Path) -> None:
    path = tmp_path / "qrmid.toml"
    entry = {"type": "qrmi", "name": "q", "resource_type": "iqm", "environment": {"QRMI_IQM_ISA_TOKEN": "tok-5ecret"}}
    path.write_text(tomli_w.dumps({"resources": [entry]}))
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert "resources[0].resource_type" in str(refused.value) and "tok-5ecret" not in str(refused.value)
    entry |= {"resource_type": "iqm-server", "environment": {"QRMI_IQM_ISA_TOKEN": ["tok-5ecret"], "bad key": "x"}}
    path.write_text(tomli_w.dumps({"resources": [entry]}))
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert "environment" in str(refused.value) and "tok-5ecret" not in str(refused.value), refused.value


async def _running(qrmid: AsyncClient, task_id: str) -> pb.Task:
    async for update in qrmid.watch(task_id):
        if update.state == pb.TASK_STATE_RUNNING:
            return update
    raise AssertionError("task finished before it ran")



@pytest.fixture(scope="module")
def pasqal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    path = tmp_path_factory.mktemp("pasqal") / "config.json"
    path.write_text(json.dumps(PASQAL_CONFIG))
    process = start_pasqal(path)
    yield process
    process.stop()


async def test_pulser_sequences_through_qrmi_pasqal_cloud(pasqal: Emulator) -> None:
    environment = {"QRMI_PASQAL_CLOUD_PROJECT_ID": PROJECT, "QRMI_PASQAL_CLOUD_BASE_URL": pasqal.url,
                   "QRMI_PASQAL_CLOUD_AUTH_ENDPOINT": f"{pasqal.url}/oauth/token",
                   "QRMI_PASQAL_CLOUD_CLIENT_ID": CLIENT_ID, "QRMI_PASQAL_CLOUD_CLIENT_SECRET": CLIENT_SECRET}
    cfg = config([{"type": "qrmi", "resource_type": "pasqal-cloud", "name": "fresnel", "resource_id": "FRESNEL",
                   "slots": 2, "poll_interval": 0.1, "status_interval": 0.5, "max_shots": 1000,
                   "environment": environment}])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        target = json.loads(await qrmid.target("fresnel"))
        assert [entry["device_type"] for entry in target] == ["FRESNEL"]
        program = sequence(fetch_device(pasqal.url, "FRESNEL"), atoms=2, parametrized=False).to_abstract_repr()
        outcomes = await asyncio.gather(*(qrmid.run("fresnel", pulser_payload(program, 30)) for _ in range(3)))
        for task, data in outcomes:
            counter = json.loads(data)["counter"]
            assert sum(counter.values()) == 30 and {len(bits) for bits in counter} == {2}
            assert task.shots == 30
        batches = [b for b in pasqal.record()["batches"] if b["device_type"] == "FRESNEL"]
        assert sorted(b["id"] for b in batches) == sorted(daemon.broker.task(t.id).remote_ref for t, _ in outcomes), \
            "QRMI's task id is the Pasqal batch id, one batch per task"
        for payload, message in [(pulser_payload(program, 1001), "job_runs must be between 1 and 1000"),
                                 (pulser_payload("{", 10), "sequence is not valid JSON"),
                                 (pulser_payload({"version": "1"}, 10), "not a valid Pulser abstract representation")]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await qrmid.start_task("fresnel", payload)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await qrmid.start_task("fresnel", bell(10))
        assert "takes pulser_sequence payloads" in refused.value.details()


QCS_KEY = "qcs-passthrough-key-0b7d"
QCS_CRN = "crn:v1:local:qcs"


@pytest.fixture(scope="module")
def qcs() -> Iterator[Proc]:
    """The IBM Quantum Platform REST API emulator (the compute service QRMI's ibm-quantum-compute-service drives)."""
    proc = start_emulator(None, "--api-key", QCS_KEY, "--crn", QCS_CRN, "--backend", "ibm_kyiv", "--job-seconds",
                          "0.4", module="qrmid.emulators.ibm_quantum_compute")
    yield proc
    proc.stop()


async def qcs_call(qcs: Proc, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=qcs.url) as http:
        response = await http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()


def qcs_resource(qcs: Proc, resource_type: str = "ibm-quantum-compute-service", **extra: Any) -> dict[str, Any]:
    prefix = "QRMI_IBM_QCS_" if resource_type == "ibm-quantum-compute-service" else "QRMI_IBM_QRS_"
    environment = {f"{prefix}ENDPOINT": f"{qcs.url}/api/v1", f"{prefix}IAM_ENDPOINT": qcs.url,
                   f"{prefix}IAM_APIKEY": QCS_KEY, f"{prefix}SERVICE_CRN": QCS_CRN}
    return {"type": "qrmi", "resource_type": resource_type, "name": "ibm_kyiv", "slots": 2,
            "poll_interval": 0.1, "status_interval": 0.5, "environment": environment, **extra}


@pytest.mark.parametrize("resource_type", ["ibm-quantum-compute-service", "qiskit-runtime-service"])
async def test_ibm_quantum_compute_service_through_qrmi(qcs: Proc, resource_type: str) -> None:
    await qcs_call(qcs, "POST", "/_emulator/settings", {"job_seconds": 0.4})
    tokens = (await qcs_call(qcs, "GET", "/_emulator/record"))["tokens"]
    cfg = config([qcs_resource(qcs, resource_type)])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        res = await qrmid.resource("ibm_kyiv")
        assert res.status == pb.RESOURCE_STATUS_ONLINE, res.status_reason
        assert json.loads(await qrmid.target("ibm_kyiv"))["configuration"]["backend_name"] == "ibm_kyiv"
        assert (await qrmid.metadata("ibm_kyiv"))["resource_type"] == resource_type

        outcomes = await asyncio.gather(*(qrmid.run("ibm_kyiv", bell(300, isa=False)) for _ in range(4)))
        for task, data in outcomes:
            counts = summarize(data)["pubs"][0]["c"]
            assert set(counts) == {"00", "11"} and sum(counts.values()) == 300
            assert "sampler: 1 pub(s), 300 shots" in await qrmid.logs(task.id)
        workers = adapter(daemon, "ibm_kyiv").workers.workers
        assert len({id(worker.handle) for worker in workers}) == 2 and all(w.handle is not None for w in workers)
        seen = await qcs_call(qcs, "GET", "/_emulator/record")
        refs = [daemon.broker.task(task.id).remote_ref for task, _ in outcomes]
        assert all(seen["jobs"][ref] == "Completed" for ref in refs), "QRMI's task id is the Runtime job id"
        assert seen["tokens"] - tokens == 2, "each handle logged in once, on its own thread"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await qrmid.start_task("ibm_kyiv", pb.Payload(qiskit_primitive=pb.QiskitPrimitive(
                program_id="noiselearner", input="[1]")))
        assert "noiselearner input must be a JSON object" in refused.value.details()

        wide = QuantumCircuit(31)  # more qubits than the service's simulator takes: the job runs and fails
        wide.h(range(31))
        wide.measure_all()
        payload = sampler_payload({"pubs": [[qasm3.dumps(wide), None, 10]], "version": 2})
        with pytest.raises(TaskFailed) as failed:
            await qrmid.run("ibm_kyiv", payload)
        reason = failed.value.task.reason
        assert "current status: Failed" in reason, "QRMI's own words"
        assert "last log line: job failed:" in reason and "circuit has 31 qubits" in reason, "the service's log"


async def test_ibm_quantum_compute_service_cancel(qcs: Proc) -> None:
    await qcs_call(qcs, "POST", "/_emulator/settings", {"job_seconds": 60})
    try:
        async with running(config([qcs_resource(qcs)])) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
            task = await _running(qrmid, (await qrmid.start_task("ibm_kyiv", bell(10, isa=False))).id)
            stopped = await qrmid.stop_task(task.id)
            assert stopped.state == pb.TASK_STATE_CANCELLED
            ref = daemon.broker.task(task.id).remote_ref
            for _ in range(100):
                if (await qcs_call(qcs, "GET", "/_emulator/record"))["jobs"][ref] == "Cancelled":
                    break
                await asyncio.sleep(0.05)
            assert (await qcs_call(qcs, "GET", "/_emulator/record"))["jobs"][ref] == "Cancelled", \
                "QRMI's task_stop cancelled the job on the service"
    finally:
        await qcs_call(qcs, "POST", "/_emulator/settings", {"job_seconds": 0.4})


async def test_a_type_without_an_api_payload_serves_status_and_refuses_tasks() -> None:
    iqm = {"type": "qrmi", "resource_type": "iqm-server", "name": "garnet", "status_interval": 60,
           "environment": {"QRMI_IQM_ISA_TOKEN": "iqm-token-6e2a"}}
    async with running(config([iqm])) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        res = await qrmid.resource("garnet")
        assert res.status == pb.RESOURCE_STATUS_OFFLINE
        assert "missing required config key: 'QRMI_IQM_ISA_ENDPOINT'" in res.status_reason, res.status_reason
        assert "iqm-token-6e2a" not in res.status_reason
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await qrmid.start_task("garnet", bell(10))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_qrmi_config_json_resource_runs_through_the_daemon(qcs: Proc, tmp_path: Path) -> None:
    await qcs_call(qcs, "POST", "/_emulator/settings", {"job_seconds": 0.2})
    source = tmp_path / "qrmi_config.json"
    source.write_text(json.dumps({"resources": [
        {"name": "ibm_kyiv", "type": "ibm-quantum-compute-service", "is_dynamic": False,
         "environment": qcs_resource(qcs)["environment"]}]}))
    source.chmod(0o600)
    async with running(config(daemon={"qrmi_config": str(source)})) as daemon, \
            AsyncClient(f"unix:{daemon.socket}") as qrmid:
        assert [res.name for res in await qrmid.list_resources()] == ["ibm_kyiv"]
        task, data = await qrmid.run("ibm_kyiv", bell(50, isa=False))
        assert task.resource == "ibm_kyiv" and sum(summarize(data)["pubs"][0]["c"].values()) == 50
