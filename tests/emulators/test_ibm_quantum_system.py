"""The IBM Quantum System API emulator, driven over real HTTP with httpx and a real S3 (moto) through boto3."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from qiskit import QuantumCircuit, qasm3, transpile
from qiskit.circuit import Parameter
from qiskit.primitives import PrimitiveResult
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.quantum_info import SparsePauliOp
from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder
from qiskit_ibm_runtime.json import RuntimeEncoder
from qiskit_ibm_runtime.models import BackendConfiguration, BackendProperties
from qiskit_ibm_runtime.utils.backend_converter import convert_to_target

from qrmid.emulators.ibm_quantum_system import EmulatorConfig
from qrmid.emulators.launch import Proc, start_emulator

from .ibm_client import SERVICE_CRN, SystemApi

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The §4 error body with ``status`` and ``code``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status
    assert UUID.match(body["trace"])
    assert len(body["correlation_id"]) == 20
    error = body["errors"][0]
    assert error["code"] == code
    assert error["message"] and error["more_info"].startswith("https://")
    return body


def to_qasm(circuit: QuantumCircuit) -> str:
    """OpenQASM 3 as QRMI writes it."""
    return qasm3.dumps(
        circuit, disable_constants=True, allow_aliasing=True, experimental=qasm3.ExperimentalFeatures.SWITCH_CASE_V1
    )


def full_width(isa: QuantumCircuit) -> QuantumCircuit:
    """A transpiled circuit with a barrier naming its last qubit, so that OpenQASM 3 keeps the backend's width."""
    wide = isa.copy()
    wide.barrier(wide.qubits[-1])
    return wide


def sampler_input(*pubs: Any, shots: int = 200, support_qiskit: bool = True) -> dict[str, Any]:
    return {"pubs": list(pubs), "shots": shots, "options": {}, "version": 2, "support_qiskit": support_qiskit}


@pytest.fixture(scope="module")
def bell() -> QuantumCircuit:
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()
    return circuit


@pytest.fixture(scope="module")
def bell_isa(bell: QuantumCircuit, perth_backend: Any) -> QuantumCircuit:
    return transpile(bell, perth_backend, optimization_level=1, seed_transpiler=7)


@pytest.fixture(scope="module")
def bell_input(bell_isa: QuantumCircuit) -> dict[str, Any]:
    return sampler_input([to_qasm(bell_isa), None, 200])


def bell_share(counts: dict[str, int]) -> tuple[float, float]:
    total = sum(counts.values())
    return counts.get("00", 0) / total, counts.get("11", 0) / total


# --- open routes and IAM -------------------------------------------------------------------------------------------


async def test_version_routes_need_no_token(ibm_emulator: Proc) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{ibm_emulator.url}/version")).json() == {"version": "1.0.0"}
        assert (await http.get(f"{ibm_emulator.url}/versions")).json() == {"versions": ["2025-08-01", "2025-08-15"]}


async def test_iam_token_and_errors(ibm_api: SystemApi) -> None:
    ok = await ibm_api.token()
    body = ok.json()
    assert ok.status_code == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["expiration"] == pytest.approx(time.time() + 3600, abs=5)
    unknown = await ibm_api.token("no-such-key")
    assert unknown.status_code == 400
    assert unknown.json() == {
        "errorCode": "BXNIM0415E",
        "errorMessage": "Provided API key could not be found.",
        "errorDetails": None,
    }
    missing = await ibm_api.http.post(f"{ibm_api.url}/identity/token", data={"apikey": "x"})
    assert missing.status_code == 400 and missing.json()["errorCode"] == "BXNIM0109E"


async def test_v1_needs_a_live_bearer_token_and_the_service_crn(ibm_api: SystemApi) -> None:
    assert_error(await ibm_api.http.get(f"{ibm_api.url}/v1/backends"), 401, "1201")
    assert_error(
        await ibm_api.http.get(f"{ibm_api.url}/v1/jobs", headers={"Authorization": "Bearer forged"}), 401, "1201"
    )
    wrong_crn = {**ibm_api.headers, "Service-CRN": "crn:v1:other"}
    assert_error(await ibm_api.http.get(f"{ibm_api.url}/v1/backends", headers=wrong_crn), 401, "1200")
    dated = await ibm_api.call("GET", "/v1/backends", headers={"IBM-API-Version": "2025-08-15"})
    assert dated.status_code == 200


async def test_expired_tokens_are_refused_until_a_new_one_is_fetched(ibm_api: SystemApi) -> None:
    assert (await ibm_api.call("GET", "/v1/backends")).status_code == 200
    expired = await ibm_api.http.post(f"{ibm_api.url}/_emulator/tokens/expire")
    assert expired.json()["expired"] >= 1
    assert_error(await ibm_api.call("GET", "/v1/backends"), 401, "1201")
    await ibm_api.login()
    assert (await ibm_api.call("GET", "/v1/backends")).status_code == 200


# --- backends ------------------------------------------------------------------------------------------------------


async def test_backends_configuration_properties_and_lanes(ibm_api: SystemApi) -> None:
    backends = (await ibm_api.call("GET", "/v1/backends")).json()["backends"]
    by_name = {b["name"]: b for b in backends}
    assert by_name["fake_perth"] == {
        "name": "fake_perth",
        "status": "online",
        "message": "",
        "version": "1.2.11",
        "locked": False,
    }
    assert "locked" not in by_name["paused"] and by_name["paused"]["status"] == "paused"
    assert (await ibm_api.call("GET", "/v1/backends/fake_perth")).json() == by_name["fake_perth"]

    configuration = (await ibm_api.call("GET", "/v1/backends/fake_perth/configuration")).json()
    properties = (await ibm_api.call("GET", "/v1/backends/fake_perth/properties")).json()
    assert configuration["backend_name"] == properties["backend_name"] == "fake_perth"
    target = convert_to_target(BackendConfiguration.from_dict(configuration), BackendProperties.from_dict(properties))
    assert target.num_qubits == 7 and target.instruction_supported("cx", (0, 1))

    lanes = await ibm_api.call("GET", "/v1/backends/lanes_two/lanes")
    assert lanes.json() == {"hpc_workload_manager": {"lanes": 2}, "ibm_quantum_compute": {"lanes": 3}}
    for suffix in ("", "/configuration", "/properties", "/lanes"):
        body = assert_error(await ibm_api.call("GET", f"/v1/backends/ibm_nowhere{suffix}"), 404, "1216")
        assert body["errors"][0]["message"] == "Backend ibm_nowhere not found."


# --- primitives ----------------------------------------------------------------------------------------------------


async def test_sampler_bell_circuit_runs_and_results_decode(
    ibm_api: SystemApi, bell_isa: QuantumCircuit, bell_input: dict[str, Any]
) -> None:
    # Two pubs: the OpenQASM 3 form QRMI sends and qiskit-ibm-runtime's own QPY form.
    document = json.dumps({**bell_input, "pubs": [*bell_input["pubs"], (bell_isa, None, 100)]}, cls=RuntimeEncoder)
    job_id, response = await ibm_api.submit("fake_perth", "sampler", document)
    assert response.status_code == 204 and response.content == b""
    running = await ibm_api.job(job_id)
    assert running["status"] == "Running" and TIME.match(running["created_time"]) and "end_time" not in running

    job = await ibm_api.wait(job_id)
    assert job["status"] == "Completed", job
    assert TIME.match(job["end_time"]) and job["end_time"] >= job["created_time"]
    assert job["usage"]["quantum_nanoseconds"] > 0
    assert job["storage"]["input"]["type"] == "s3_compatible" and job["program_id"] == "sampler"

    result = ResultDecoder.decode(await ibm_api.read(f"results_{job_id}.json"))
    assert isinstance(result, PrimitiveResult) and len(result) == 2
    assert result.metadata == {"version": 2}
    for pub_result, shots in zip(result, (200, 100), strict=True):
        counts = pub_result.data.meas.get_counts()
        assert sum(counts.values()) == shots and pub_result.metadata["shots"] == shots
        zeros, ones = bell_share(counts)
        assert zeros > 0.3 and ones > 0.3 and zeros + ones > 0.8, counts
    logs = await ibm_api.read(f"logs_{job_id}.json")
    assert f"Job {job_id} started" in logs and "completed" in logs

    listed = (await ibm_api.call("GET", "/v1/jobs")).json()["jobs"]
    assert job_id in [j["id"] for j in listed]
    assert (await ibm_api.delete(job_id)).status_code == 204
    assert_error(await ibm_api.call("GET", f"/v1/jobs/{job_id}"), 404, "1291")
    assert_error(await ibm_api.delete(job_id), 404, "1291")


async def test_sampler_plain_results_without_qiskit(ibm_api: SystemApi, bell_isa: QuantumCircuit) -> None:
    job_id, response = await ibm_api.submit(
        "fake_perth", "sampler", sampler_input([to_qasm(bell_isa), [], 64], support_qiskit=False)
    )
    assert response.status_code == 204
    job = await ibm_api.wait(job_id)
    assert job["status"] == "Completed", job
    plain = json.loads(await ibm_api.read(f"results_{job_id}.json"))
    meas = plain["results"][0]["data"]["meas"]
    assert meas["num_bits"] == 2 and len(meas["samples"]) == 64
    assert set(meas["samples"]) <= {"0x0", "0x1", "0x2", "0x3"}
    assert plain["results"][0]["metadata"]["shots"] == 64
    await ibm_api.delete(job_id)


async def test_estimator_with_parameters(ibm_api: SystemApi, perth_backend: Any) -> None:
    theta = Parameter("theta")
    circuit = QuantumCircuit(2)
    circuit.ry(theta, 0)
    circuit.cx(0, 1)
    isa = transpile(circuit, perth_backend, optimization_level=1, seed_transpiler=7)
    observables = ObservablesArray.coerce(SparsePauliOp.from_list([("ZZ", 1.0)]).apply_layout(isa.layout)).tolist()
    document = {
        "pubs": [[to_qasm(full_width(isa)), observables, [[0.0], [3.141592653589793]], 0.05]],
        "options": {"default_precision": 0.05},
        "version": 2,
        "support_qiskit": True,
    }
    job_id, response = await ibm_api.submit("fake_perth", "estimator", document)
    assert response.status_code == 204
    job = await ibm_api.wait(job_id)
    assert job["status"] == "Completed", job
    pub_result = ResultDecoder.decode(await ibm_api.read(f"results_{job_id}.json"))[0]
    evs, stds = pub_result.data.evs, pub_result.data.stds
    # <ZZ> of a Bell-like state is +1 for theta = 0 and for theta = pi (|11>), less the device's noise.
    assert evs.shape == (2,) and all(0.7 < ev < 1.2 for ev in evs), evs
    assert list(stds) == [0.05, 0.05] and pub_result.metadata["target_precision"] == 0.05
    await ibm_api.delete(job_id)


async def test_non_isa_circuits_fail_with_5203(ibm_api: SystemApi, bell: QuantumCircuit) -> None:
    job_id, response = await ibm_api.submit("fake_perth", "sampler", sampler_input([to_qasm(bell)]))
    assert response.status_code == 204
    job = await ibm_api.wait(job_id)
    assert job["status"] == "Failed" and job["reason_code"] == 5203
    assert "unknown instruction: h" in job["reason_message"] and TIME.match(job["end_time"])
    assert "unknown instruction: h" in await ibm_api.read(f"logs_{job_id}.json")
    await ibm_api.delete(job_id)

    uncoupled = QuantumCircuit(3)
    uncoupled.cx(0, 2)  # qubits 0 and 2 of perth are not coupled
    uncoupled.measure_all()
    job_id, _ = await ibm_api.submit("fake_perth", "sampler", sampler_input([to_qasm(uncoupled)]))
    job = await ibm_api.wait(job_id)
    assert job["status"] == "Failed" and job["reason_code"] == 5203 and "(0, 2)" in job["reason_message"]
    await ibm_api.delete(job_id)


@pytest.fixture(scope="module")
def narrow_bell(perth_backend: Any) -> tuple[QuantumCircuit, list[Any]]:
    """A Bell pair transpiled onto Perth's qubits 0 and 1, with ZZ and XX laid out the documented way
    (``apply_layout(isa.layout)``): the observables have the backend's 7 qubits, the circuit read back from
    OpenQASM 3 only 2."""
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    isa = transpile(circuit, perth_backend, initial_layout=[0, 1], optimization_level=1, seed_transpiler=7)
    observables = ObservablesArray.coerce([SparsePauliOp(label).apply_layout(isa.layout) for label in ("ZZ", "XX")])
    assert isa.num_qubits == observables.num_qubits == 7 and qasm3.loads(to_qasm(isa)).num_qubits == 2
    return isa, observables.tolist()


def estimator_input(*pubs: Any) -> str:
    return json.dumps({"pubs": list(pubs), "precision": 0.05, "version": 2, "support_qiskit": True}, cls=RuntimeEncoder)


async def estimate(ibm_api: SystemApi, backend: str, *pubs: Any) -> tuple[str, dict[str, Any]]:
    """Run an estimator job to its end; the job id and the job."""
    job_id, response = await ibm_api.submit(backend, "estimator", estimator_input(*pubs))
    assert response.status_code == 204, response.text
    return job_id, await ibm_api.wait(job_id)


def assert_bell_evs(results: str, pubs: int) -> None:
    """<ZZ> and <XX> of a Bell pair are +1, less the device's noise."""
    result = ResultDecoder.decode(results)
    assert len(result) == pubs
    for pub_result in result:
        assert pub_result.data.evs.shape == (2,) and all(0.7 < ev < 1.2 for ev in pub_result.data.evs), result


async def test_strict_pub_widths_fail_a_pub_whose_circuit_and_observables_differ_in_width(
    ibm_api: SystemApi, narrow_bell: tuple[QuantumCircuit, list[Any]]
) -> None:
    """The default, as IBM's reference simulator: the POST is taken (the input is read only once the job runs) and
    the job fails, saying both widths and how to make them agree."""
    isa, observables = narrow_bell
    assert (await ibm_api.record())["backends"]["fake_perth"]["pub_widths"] == "strict"
    job_id, job = await estimate(ibm_api, "fake_perth", [to_qasm(isa), observables])
    assert job["status"] == "Failed" and job["reason_code"] == 1002, job
    assert "circuit (2)" in job["reason_message"] and "observables (7)" in job["reason_message"]
    assert "barrier" in job["reason_message"] and "circuit (2)" in await ibm_api.read(f"logs_{job_id}.json")
    await ibm_api.delete(job_id)

    job_id, job = await estimate(ibm_api, "fake_perth", [to_qasm(full_width(isa)), {"ZZ": 1.0}])
    assert job["status"] == "Failed" and job["reason_code"] == 1002, job
    assert "circuit (7)" in job["reason_message"] and "apply_layout" in job["reason_message"]
    assert "observables (2)" in job["reason_message"]
    await ibm_api.delete(job_id)

    # Equal widths run: OpenQASM 3 naming the last qubit, and QPY, which keeps every qubit of the circuit.
    job_id, job = await estimate(ibm_api, "fake_perth", [to_qasm(full_width(isa)), observables], [isa, observables])
    assert job["status"] == "Completed", job
    assert_bell_evs(await ibm_api.read(f"results_{job_id}.json"), 2)
    await ibm_api.delete(job_id)


async def test_lenient_pub_widths_pad_the_circuit_and_switch_at_run_time(
    ibm_api: SystemApi, narrow_bell: tuple[QuantumCircuit, list[Any]]
) -> None:
    isa, observables = narrow_bell
    assert (await ibm_api.record())["backends"]["lenient"]["pub_widths"] == "lenient"
    job_id, job = await estimate(ibm_api, "lenient", [to_qasm(isa), observables])
    assert job["status"] == "Completed", job
    assert_bell_evs(await ibm_api.read(f"results_{job_id}.json"), 1)
    await ibm_api.delete(job_id)

    try:
        assert (await ibm_api.control("lenient", pub_widths="strict"))["pub_widths"] == "strict"
        job_id, job = await estimate(ibm_api, "lenient", [to_qasm(isa), observables])
        assert job["status"] == "Failed" and "circuit (2)" in job["reason_message"], job
        await ibm_api.delete(job_id)
    finally:
        assert (await ibm_api.control("lenient", pub_widths="lenient"))["pub_widths"] == "lenient"
    refused = await ibm_api.http.post(f"{ibm_api.url}/_emulator/backends/lenient", json={"pub_widths": "loose"})
    assert "pub_widths" in assert_error(refused, 400, "1337")["errors"][0]["message"]
    assert (await ibm_api.record())["backends"]["lenient"]["pub_widths"] == "lenient"


def test_pub_widths_is_checked_at_config_load() -> None:
    assert EmulatorConfig().backends[0].pub_widths == "strict"
    with pytest.raises(ValidationError, match="pub_widths"):
        EmulatorConfig.model_validate({"backends": [{"name": "b", "pub_widths": "loose"}]})


async def test_bad_input_and_missing_input_fail_the_job(ibm_api: SystemApi, bell_input: dict[str, Any]) -> None:
    job_id, _ = await ibm_api.submit("fake_perth", "sampler", {**bell_input, "version": 1})
    job = await ibm_api.wait(job_id)
    assert job["status"] == "Failed" and job["reason_code"] == 1002 and "version" in job["reason_message"]
    await ibm_api.delete(job_id)

    missing = str(uuid.uuid4())  # presigned URLs for an input that was never stored
    response = await ibm_api.call("POST", "/v1/jobs", json=ibm_api.job_request(missing, "fake_perth", "sampler"))
    assert response.status_code == 204
    job = await ibm_api.wait(missing)
    assert job["status"] == "Failed" and job["reason_code"] == 1517 and "404" in job["reason_message"]
    await ibm_api.delete(missing)


async def test_timeout_secs_is_enforced(ibm_api: SystemApi, bell_input: dict[str, Any]) -> None:
    job_id, response = await ibm_api.submit("slow", "sampler", bell_input, timeout_secs=1)
    assert response.status_code == 204
    job = await ibm_api.wait(job_id, timeout=10)
    assert job["status"] == "Failed" and job["reason_code"] == 1305
    await ibm_api.delete(job_id)


# --- lifecycle -----------------------------------------------------------------------------------------------------


async def test_cancel_is_synchronous_and_delete_needs_a_terminal_job(
    ibm_api: SystemApi, bell_input: dict[str, Any]
) -> None:
    job_id, response = await ibm_api.submit("slow", "sampler", bell_input)
    assert response.status_code == 204
    body = assert_error(await ibm_api.delete(job_id), 409, "1337")
    assert body["errors"][0]["message"] == f"Deleting a job in a non-terminal state is not possible. Job ID: {job_id}."
    assert (await ibm_api.call("POST", f"/v1/jobs/{job_id}/cancel")).status_code == 204
    job = await ibm_api.job(job_id)
    assert job["status"] == "Cancelled" and TIME.match(job["end_time"])
    assert_error(await ibm_api.call("POST", f"/v1/jobs/{job_id}/cancel"), 409, "1306")
    assert (await ibm_api.delete(job_id)).status_code == 204
    assert_error(await ibm_api.call("POST", f"/v1/jobs/{job_id}/cancel"), 404, "1291")


async def test_lanes_are_freed_by_delete_only(ibm_api: SystemApi, bell_input: dict[str, Any]) -> None:
    first, r1 = await ibm_api.submit("lanes_two", "sampler", bell_input)
    second, r2 = await ibm_api.submit("lanes_two", "sampler", bell_input)
    assert r1.status_code == r2.status_code == 204
    _, full = await ibm_api.submit("lanes_two", "sampler", bell_input)
    body = assert_error(full, 429, "1232")
    assert (
        body["errors"][0]["message"] == "The maximum number of execution lanes for backend lanes_two has been reached."
    )
    assert (await ibm_api.wait(first))["status"] == (await ibm_api.wait(second))["status"] == "Completed"
    _, still_full = await ibm_api.submit("lanes_two", "sampler", bell_input)
    assert_error(still_full, 429, "1232")  # completed jobs keep their lanes

    assert (await ibm_api.delete(first)).status_code == 204
    third, admitted = await ibm_api.submit("lanes_two", "sampler", bell_input)
    assert admitted.status_code == 204
    record = (await ibm_api.record())["backends"]["lanes_two"]
    assert record["stored"] == 2 and record["max_stored"] == 2 and record["rejected_429"] == 2
    assert [s["id"] for s in record["submissions"]] == [first, second, third] and record["deletes"] == 1
    await ibm_api.wait(third)
    for job_id in (second, third):
        await ibm_api.delete(job_id)


async def test_post_jobs_checks_in_the_documented_order(ibm_api: SystemApi, bell_input: dict[str, Any]) -> None:
    async def post(request: dict[str, Any]) -> httpx.Response:
        return await ibm_api.call("POST", "/v1/jobs", json=request)

    too_large = {**ibm_api.job_request(str(uuid.uuid4()), "fake_perth", "sampler"), "padding": "x" * 1_000_000}
    assert_error(await post(too_large), 413, "")
    # Invalid body before unknown backend.
    invalid = ibm_api.job_request(str(uuid.uuid4()), "ibm_nowhere", "sampler")
    del invalid["timeout_secs"]
    assert assert_error(await post(invalid), 400, "1337")["errors"][0]["target"]["name"] == "timeout_secs"
    assert_error(await post({**invalid, "timeout_secs": 5, "program_id": "qaoa"}), 400, "1337")
    assert_error(await post(ibm_api.job_request(str(uuid.uuid4()), "ibm_nowhere", "sampler")), 404, "1216")
    assert_error(await post(ibm_api.job_request(str(uuid.uuid4()), "paused", "sampler")), 503, "")

    held, response = await ibm_api.submit("reserved", "sampler", bell_input)
    assert response.status_code == 204
    await ibm_api.control("reserved", locked=True, lanes=1)
    try:
        # Duplicate id before locked; locked before lanes full.
        assert_error(await post(ibm_api.job_request(held, "reserved", "sampler")), 409, "1231")
        _, locked = await ibm_api.submit("reserved", "sampler", bell_input)
        assert_error(locked, 423, "1233")
        await ibm_api.control("reserved", locked=False)
        _, full = await ibm_api.submit("reserved", "sampler", bell_input)
        assert_error(full, 429, "1232")
    finally:
        await ibm_api.control("reserved", locked=False, lanes=5)
    record = (await ibm_api.record())["backends"]["reserved"]
    assert record["rejected_423"] == 1 and record["rejected_409_duplicate"] == 1 and record["rejected_429"] == 1
    await ibm_api.wait(held)
    await ibm_api.delete(held)


async def test_lanes_first_order_refuses_a_duplicate_with_429_while_the_lanes_are_full(
    ibm_api: SystemApi, bell_input: dict[str, Any]
) -> None:
    """IBM's reference simulator counts stored jobs before it looks for a duplicate id: a client must never
    conclude from a 429 that its job did not land."""
    state = await ibm_api.control("reserved", admission_order="lanes-first", lanes=1)
    assert state["admission_order"] == "lanes-first"
    try:
        stored, response = await ibm_api.submit("reserved", "sampler", bell_input)
        assert response.status_code == 204
        again = ibm_api.job_request(stored, "reserved", "sampler")
        assert_error(await ibm_api.call("POST", "/v1/jobs", json=again), 429, "1232")
        assert (await ibm_api.job(stored))["id"] == stored, "the job refused with 429 is the one stored"
        await ibm_api.control("reserved", lanes=2)
        assert_error(await ibm_api.call("POST", "/v1/jobs", json=again), 409, "1231")
        await ibm_api.control("reserved", admission_order="duplicate-first", lanes=1)
        assert_error(await ibm_api.call("POST", "/v1/jobs", json=again), 409, "1231")
    finally:
        await ibm_api.control("reserved", admission_order="duplicate-first", lanes=5)
    record = (await ibm_api.record())["backends"]["reserved"]
    assert [s["id"] for s in record["submissions"]].count(stored) == 1
    await ibm_api.wait(stored)
    await ibm_api.delete(stored)
    record = (await ibm_api.record())["backends"]["reserved"]
    assert record["deleted"][-1]["id"] == stored


async def test_backend_state_changes_at_run_time(ibm_api: SystemApi, bell_input: dict[str, Any]) -> None:
    try:
        state = await ibm_api.control("faulty", status="offline", message="maintenance")
        assert state["status"] == "offline" and "locked" not in state
        assert (await ibm_api.call("GET", "/v1/backends/faulty")).json()["message"] == "maintenance"
        _, refused = await ibm_api.submit("faulty", "sampler", bell_input)
        assert_error(refused, 503, "")
        await ibm_api.control("faulty", status="online", message="", fail_next={"count": 1, "reason_code": 1517})
        failed, _ = await ibm_api.submit("faulty", "sampler", bell_input)
        job = await ibm_api.wait(failed)
        assert job["status"] == "Failed" and job["reason_code"] == 1517
        passed, _ = await ibm_api.submit("faulty", "sampler", bell_input)
        assert (await ibm_api.wait(passed))["status"] == "Completed"
    finally:
        await ibm_api.control("faulty", status="online", message="")
    for job_id in (failed, passed):
        await ibm_api.delete(job_id)


# --- failure injection ---------------------------------------------------------------------------------------------


async def test_fault_injection_routes(ibm_api: SystemApi, bell_input: dict[str, Any]) -> None:
    faults = f"{ibm_api.url}/_emulator/faults"
    before = (await ibm_api.record())["submit_statuses"].get("429", 0)
    try:
        storm = {"rules": [{"status": 429, "method": "POST", "path_prefix": "/v1/jobs", "count": 2}]}
        assert (await ibm_api.http.post(faults, json=storm)).status_code == 200
        for _ in range(2):
            _, response = await ibm_api.submit("faulty", "sampler", bell_input)
            assert_error(response, 429, "1232")
        job_id, response = await ibm_api.submit("faulty", "sampler", bell_input)
        assert response.status_code == 204
        assert (await ibm_api.record())["submit_statuses"]["429"] == before + 2

        outage = {"rules": [{"status": 503, "path_prefix": "/v1/backends", "seconds": 0.5}]}
        await ibm_api.http.post(faults, json=outage)
        assert_error(await ibm_api.call("GET", "/v1/backends"), 503, "")
        await asyncio.sleep(0.6)
        assert (await ibm_api.call("GET", "/v1/backends")).status_code == 200

        await ibm_api.http.post(faults, json={"rules": [{"status": 502, "path_prefix": "/v1/jobs/", "count": 1}]})
        assert (await ibm_api.call("GET", f"/v1/jobs/{job_id}")).status_code == 502
        assert (await ibm_api.call("GET", f"/v1/jobs/{job_id}")).status_code == 200

        await ibm_api.http.post(faults, json={"latency_s": 0.3})
        started = time.monotonic()
        await ibm_api.call("GET", "/version")
        assert time.monotonic() - started >= 0.3
    finally:
        cleared = await ibm_api.http.delete(faults)
    assert cleared.json() == {"latency_s": 0.0, "rules": []}
    await ibm_api.wait(job_id)
    await ibm_api.delete(job_id)


async def test_faults_that_strike_after_a_write_landed(ibm_api: SystemApi, bell_input: dict[str, Any]) -> None:
    faults = f"{ibm_api.url}/_emulator/faults"
    lost = {"rules": [{"status": 503, "landed": True, "method": "POST", "path_prefix": "/v1/jobs", "count": 1}]}
    assert (await ibm_api.http.post(faults, json=lost)).status_code == 200
    landed, response = await ibm_api.submit("faulty", "sampler", bell_input)
    assert_error(response, 503, "")
    assert (await ibm_api.job(landed))["id"] == landed, "the answer was lost, the job was stored"

    held = {"rules": [{"landed": True, "hold_s": 30, "method": "POST", "path_prefix": "/v1/jobs", "count": 1}]}
    await ibm_api.http.post(faults, json=held)
    job_id = str(uuid.uuid4())
    submission = asyncio.create_task(ibm_api.submit("faulty", "sampler", bell_input, job_id=job_id))
    while job_id not in [s["id"] for s in (await ibm_api.record())["backends"]["faulty"]["submissions"]]:
        await asyncio.sleep(0.05)
    assert not submission.done(), "the job is stored while its POST is still unanswered"
    submission.cancel()  # the client hangs up: the emulator stops holding an answer no one will read
    with contextlib.suppress(asyncio.CancelledError):
        await submission
    assert (await ibm_api.job(job_id))["status"] in ("Running", "Completed")

    invalid = await ibm_api.http.post(faults, json={"rules": [{"method": "POST"}]})
    assert invalid.status_code == 400 and "needs a 'status'" in invalid.json()["error"]
    await ibm_api.http.delete(faults)
    for stored in (landed, job_id):
        await ibm_api.wait(stored)
        await ibm_api.delete(stored)


# --- defaults ------------------------------------------------------------------------------------------------------


async def test_defaults_without_a_config_file() -> None:
    proc = start_emulator()
    try:
        async with httpx.AsyncClient(base_url=proc.url) as http:
            token = (
                await http.post(
                    "/identity/token",
                    data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "emulator-api-key"},
                )
            ).json()["access_token"]
            # Not strict: a wrong Service-CRN is only logged.
            headers = {"Authorization": f"Bearer {token}", "Service-CRN": f"{SERVICE_CRN}:other"}
            backends = (await http.get("/v1/backends", headers=headers)).json()["backends"]
            assert [b["name"] for b in backends] == ["fake_perth"]
            lanes = (await http.get("/v1/backends/fake_perth/lanes", headers=headers)).json()
            assert lanes["hpc_workload_manager"] == {"lanes": 5}
    finally:
        proc.stop()
