"""The embedded simulators through a real qrmid subprocess: results, validation, concurrency, responsiveness."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from qrmid import examples
from qrmid.client import (
    AsyncClient,
    Client,
    estimator_payload,
    payload_from_task_input,
    pulser_payload,
    sampler_payload,
)
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

BELL = examples.load("bell")["parameters"]["pubs"][0][0]


def sampler(circuit: str, shots: int = 256) -> pb.Payload:
    return sampler_payload({"pubs": [[circuit, None, shots]], "version": 2})


def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    return error.value.code(), error.value.details()


def test_bell_sampler_gives_half_00_half_11(local_daemon: str) -> None:
    with Client(local_daemon) as qrmid:
        _, data = qrmid.run("local-qiskit", payload_from_task_input(examples.load("bell")))
    result = json.loads(data)
    assert result["__type__"] == "PrimitiveResult", "results use IBM's RuntimeEncoder form"
    pub = result["__value__"]["pub_results"][0]
    assert pub["__type__"] == "SamplerPubResult"
    assert pub["__value__"]["data"]["__value__"]["fields"]["meas"]["__type__"] == "BitArray"
    counts = summarize(data)["pubs"][0]["meas"]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 1024
    assert 400 < counts["00"] < 624


def test_estimator_returns_expectation_values(local_daemon: str) -> None:
    with Client(local_daemon) as qrmid:
        _, data = qrmid.run("local-qiskit", payload_from_task_input(examples.load("estimator")))
    pub = summarize(data)["pubs"][0]
    # <IZ> + 0.5 <XX> after RY(theta) q0, CX: theta=0 is |00> (1 + 0); theta=pi/2 a Bell state (0 + 0.5)
    assert pub["evs"] == pytest.approx([1.0, 0.5], abs=0.05)
    assert len(pub["stds"]) == 2


def test_pulser_counts_sum_to_the_runs(local_daemon: str) -> None:
    doc = examples.load("pulser")
    with Client(local_daemon) as qrmid:
        task, data = qrmid.run("local-pulser", payload_from_task_input(doc))
        logs = qrmid.logs(task.id)
    counter = json.loads(data)["counter"]
    assert sum(counter.values()) == doc["job_runs"]
    assert all(len(bits) == len(doc["sequence"]["register"]) for bits in counter)
    assert "pulser-simulation" in logs


def test_targets_describe_the_devices(local_daemon: str) -> None:
    with Client(local_daemon) as qrmid:
        qiskit = json.loads(qrmid.target("local-qiskit"))
        pulser = json.loads(qrmid.target("local-pulser"))
        metadata = qrmid.metadata("local-qiskit")
    assert qiskit["configuration"]["backend_name"] == "local-qiskit"
    assert qiskit["configuration"]["n_qubits"] == 26 and "cx" in qiskit["configuration"]["basis_gates"]
    [device] = pulser
    assert device["device_type"] == "AnalogDevice" and json.loads(device["specs"])["max_runs"] == 2000
    assert metadata["backend_name"] == "local-qiskit"


@pytest.mark.parametrize(("payload", "message"), [
    (sampler("OPENQASM 3.0;\nqubit[2] q;\nfoo q[0];\n"), "pub 0: circuit is not valid OpenQASM 3"),
    (sampler_payload("{not json"), "input is not valid JSON"),
    (sampler_payload({"pubs": [[BELL]], "version": 1}), "input 'version' must be 2"),
    (sampler_payload({"pubs": [], "version": 2}), "input needs a non-empty 'pubs' list"),
    (sampler(BELL, shots=10**7), "pub 0: 10000000 shots; this resource allows at most 100000"),
    (sampler("OPENQASM 3.0;\nqubit[30] q;\n"), "circuit has 30 qubits; this resource simulates at most 26"),
    (pb.Payload(qiskit_primitive=pb.QiskitPrimitive(program_id="optimizer", input="{}")),
     "program_id must be 'sampler' or 'estimator'"),
    (estimator_payload({"pubs": [[BELL, {"ZZZ": 1}]], "version": 2}), "pub 0:"),
    (pulser_payload({"version": "1"}, 10), "not a valid Pulser abstract representation"),
])
def test_malformed_inputs_are_refused_at_submit(local_daemon: str, payload: pb.Payload, message: str) -> None:
    with Client(local_daemon) as qrmid:
        code, details = refused(lambda: qrmid.start_task("local-qiskit" if payload.HasField("qiskit_primitive")
                                                         else "local-pulser", payload))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in details
        resource = qrmid.resource("local-qiskit")
        assert resource.status == pb.RESOURCE_STATUS_ONLINE, "the daemon keeps serving"


def test_pulser_runs_are_bounded(local_daemon: str) -> None:
    doc = examples.load("pulser")
    with Client(local_daemon) as qrmid:
        code, details = refused(lambda: qrmid.start_task("local-pulser", pulser_payload(doc["sequence"], 0)))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT,
                                   "pulser_sequence.job_runs is 0; it must be at least 1")
        code, details = refused(lambda: qrmid.start_task("local-pulser", pulser_payload(doc["sequence"], 2001)))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT,
                                   "invalid payload for 'local-pulser': job_runs must be between 1 and 2000, not 2001")
        code, details = refused(lambda: qrmid.start_task("local-pulser", sampler(BELL)))
        assert "takes pulser_sequence payloads, not qiskit_primitive" in details


async def test_200_concurrent_tasks_all_complete(local_daemon: str) -> None:
    async with AsyncClient(local_daemon) as qrmid:
        outcomes = await asyncio.gather(*(qrmid.run("local-qiskit", sampler(BELL, shots=16)) for _ in range(200)))
    assert len({task.id for task, _ in outcomes}) == 200
    assert all(task.state == pb.TASK_STATE_COMPLETED for task, _ in outcomes)
    assert all(sum(summarize(data)["pubs"][0]["meas"].values()) == 16 for _, data in outcomes)


def heavy_circuit(qubits: int, layers: int) -> str:
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for layer in range(layers):
        lines += [f"rx({0.1 + layer * 0.01}) q[{i}];" for i in range(qubits)]
        lines += [f"cx q[{i}], q[{(i + 1) % qubits}];" for i in range(qubits)]
    lines.append("c = measure q;")
    return "\n".join(lines) + "\n"


def test_the_daemon_answers_while_a_long_simulation_runs_and_cancel_stops_it(local_daemon: str) -> None:
    with Client(local_daemon) as qrmid:
        task = qrmid.start_task("local-qiskit", sampler(heavy_circuit(24, 60), shots=1))
        for update in qrmid.watch(task.id):
            if update.state != pb.TASK_STATE_QUEUED:
                break
        assert update.state == pb.TASK_STATE_RUNNING
        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            resource = qrmid.resource("local-qiskit")
            latencies.append(time.perf_counter() - started)
            assert resource.running_tasks >= 1
        assert qrmid.task(task.id).state == pb.TASK_STATE_RUNNING, "every call was answered mid-simulation"
        stopped = qrmid.stop_task(task.id)
        assert stopped.state == pb.TASK_STATE_CANCELLED
        # the worker running it is stopped, so its slot frees without waiting for the simulation
        _, data = qrmid.run("local-qiskit", sampler(BELL, shots=8))
        assert sum(summarize(data)["pubs"][0]["meas"].values()) == 8
    print(f"GetResource during simulation: median {sorted(latencies)[10] * 1e3:.2f} ms, "
          f"max {max(latencies) * 1e3:.2f} ms")
