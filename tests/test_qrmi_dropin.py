"""QRMI's published example programs, with only their ``qrmi`` imports pointed at ``qrmid.qrmi``, run unchanged as
subprocesses against a real daemon, in the environment the Slurm plugin gives a job (resource lists and lease
tokens; the daemon requires leases). Also ``qrmid-task-runner`` and the drop-in's error mapping."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from daemons import subprocess_daemon
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice
from qiskit.circuit.library import QAOAAnsatz
from qiskit.quantum_info import SparsePauliOp, Statevector

from qrmid import examples
from qrmid.client import Client, pulser_payload
from qrmid.integrations.qiskit import get_backend
from qrmid.qrmi import (
    InvalidInputError,
    Payload,
    QRMIService,
    QuantumResource,
    ResourceType,
    TaskNotFoundError,
    TaskStatus,
)
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

EXAMPLES = Path(__file__).parent / "qrmi_examples"
RESOURCES = {"local-qiskit": "local-qiskit", "local-pulser": "local-pulser"}
CONFIG = """
[leases]
required = true

[[resources]]
type = "local-qiskit"
name = "local-qiskit"
max_qubits = 5

[[resources]]
type = "local-pulser"
name = "local-pulser"
"""

@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    with subprocess_daemon(CONFIG) as (address, _):
        yield address

@pytest.fixture(scope="module")
def job_env(daemon: str) -> Iterator[dict[str, str]]:
    """A job's environment as spank_qrmid exports it, with a lease on each resource."""
    with Client(daemon) as qrmid:
        tokens = {name: qrmid.acquire(name).token for name in RESOURCES}
        yield {"QRMID_ADDRESS": daemon, "QRMI_JOB_QPU_RESOURCES": ",".join(RESOURCES),
               "QRMI_JOB_QPU_TYPES": ",".join(RESOURCES.values()),
               **{f"{name}_QRMI_JOB_ACQUISITION_TOKEN": token for name, token in tokens.items()}}
        for token in tokens.values():
            qrmid.release(token)

def run(job_env: dict[str, str], program: list[str], cwd: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("QRMI_", "SLURM_JOB_QPU"))}
    return subprocess.run(program, env={**env, **job_env, **overrides}, cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)

def example(job_env: dict[str, str], tmp_path: Path, name: str, *args: str, **overrides: str) -> str:
    """Run ``qrmi_examples/NAME`` and return its output; it must exit 0."""
    completed = run(job_env, [sys.executable, str(EXAMPLES / name), *args], tmp_path, **overrides)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout

def line_after(output: str, prefix: str) -> str:
    return next(line.removeprefix(prefix) for line in output.splitlines() if line.startswith(prefix))

def test_sampler_example(job_env: dict[str, str], tmp_path: Path) -> None:
    out = example(job_env, tmp_path, "qiskit_sampler.py", QRMI_JOB_QPU_RESOURCES="local-qiskit",
                  QRMI_JOB_QPU_TYPES="local-qiskit")
    counts = ast.literal_eval(line_after(out, "Counts for the 'meas' output register: "))
    assert sum(counts.values()) == 10000 and all(len(bits) == 5 for bits in counts)
    assert "Available resource: id=local-qiskit type=ResourceType.LocalQiskit" in out

def test_estimator_example_matches_exact_value(job_env: dict[str, str], tmp_path: Path, daemon: str) -> None:
    out = example(job_env, tmp_path, "qiskit_estimator.py", QRMI_JOB_QPU_RESOURCES="local-qiskit",
                  QRMI_JOB_QPU_TYPES="local-qiskit")
    value = float(line_after(out, "  > Expectation value: "))
    target = get_backend("local-qiskit", address=daemon).target  # the program's problem, solved exactly here
    edges = target.build_coupling_map().get_edges()
    observable = SparsePauliOp.from_sparse_list([("ZZ", [i, j], 0.5) for i, j in edges], target.num_qubits)
    exact = Statevector(QAOAAnsatz(observable, reps=2).assign_parameters([0.1, 0.2, 0.3, 0.4]))
    assert value == pytest.approx(exact.expectation_value(observable).real, abs=0.15)

def test_quantum_resource_example(job_env: dict[str, str], tmp_path: Path, daemon: str) -> None:
    (tmp_path / "input.json").write_text(json.dumps(examples.load("bell")["parameters"]))
    out = example(job_env, tmp_path, "qrmi_ibm_quantum_system.py", "local-qiskit", "input.json", "sampler")
    assert "Task ended - TaskStatus.Completed" in out
    assert '"status": "online"' in out and '"max_slots": 2' in out
    result = next(line for line in out.splitlines() if line.startswith('{"__type__": "PrimitiveResult"'))
    [pub] = summarize(result.encode())["pubs"]
    assert set(pub["meas"]) <= {"00", "11"} and sum(pub["meas"].values()) == 1024
    token = line_after(out, "lock ")
    with Client(daemon) as qrmid:  # the example released its own lease; the job's two remain
        assert len(qrmid.list_leases()) == 2 and len(token) > 20

def test_pasqal_example(job_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "sequence.json").write_text(json.dumps(examples.load("pulser")["sequence"]))
    out = example(job_env, tmp_path, "qrmi_pasqal_cloud.py", "local-pulser", "sequence.json")
    assert "Status after cancelation TaskStatus.Cancelled" in out and "Task completed" in out
    counter = json.loads(line_after(out, "Results: "))["counter"]
    assert sum(counter.values()) == 100

def test_service_example(job_env: dict[str, str], tmp_path: Path) -> None:
    out = example(job_env, tmp_path, "qrmi_service.py", "local-pulser")
    assert "Accessible resources (2 found):" in out
    assert re.search(r"local-qiskit +type=ResourceType.LocalQiskit", out)
    assert "Released 'local-pulser'." in out and '"device_type": "AnalogDevice"' in out

def test_pulser_example(job_env: dict[str, str], tmp_path: Path) -> None:
    out = example(job_env, tmp_path, "pulser_qrmi.py", QRMI_JOB_QPU_RESOURCES="local-pulser",
                  QRMI_JOB_QPU_TYPES="local-pulser")
    counts = ast.literal_eval(re.search(r"\{.*\}", line_after(out, "Results: ")).group())  # a Counter's repr
    assert sum(counts.values()) == 1000 and all(len(bits) == 4 for bits in counts)

def test_task_runner(job_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "bell.json").write_text(json.dumps(examples.load("bell")))
    runner = str(Path(sys.executable).parent / "qrmid-task-runner")
    done = run(job_env, [runner, "local-qiskit", "bell.json", "out.json"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Task ID: " in done.stdout
    [pub] = summarize((tmp_path / "out.json").read_bytes())["pubs"]
    assert set(pub["meas"]) <= {"00", "11"} and sum(pub["meas"].values()) == 1024
    printed = run(job_env, [sys.executable, "-m", "qrmid.task_runner", "local-qiskit", "bell.json"], tmp_path)
    assert printed.returncode == 0 and '{"__type__": "PrimitiveResult"' in printed.stdout
    missing = run(job_env, [runner, "nope", "bell.json"], tmp_path)
    assert missing.returncode == 2 and "nope is not available" in missing.stdout
    unleased = run(job_env, [runner, "local-qiskit", "bell.json"], tmp_path,
                   **{"local-qiskit_QRMI_JOB_ACQUISITION_TOKEN": ""})
    assert unleased.returncode == 2 and "needs a lease" in unleased.stdout

def test_dropin_maps_daemon_errors(job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in job_env.items():
        monkeypatch.setenv(key, value)
    qrmi = QuantumResource("local-qiskit", ResourceType.IBMQuantumSystem)
    with pytest.raises(InvalidInputError, match="INVALID_ARGUMENT: .*OpenQASM"):
        qrmi.task_start(Payload.QiskitPrimitive(input='{"pubs": [["not qasm"]], "version": 2}', program_id="sampler"))
    with pytest.raises(TaskNotFoundError, match="NOT_FOUND"):
        qrmi.task_status("no-such-task")
    assert not QuantumResource("nope", ResourceType.IBMQuantumSystem).is_accessible()
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", "local-qiskit;nope;custom")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "local-qiskit;ibm-quantum-system;some-new-type")
    monkeypatch.setenv("QRMI_LIST_DELIMITER", ";")
    service = QRMIService()  # only accessible resources of known types
    assert [r.resource_id() for r in service.resources()] == ["local-qiskit"] and service.resource("nope") is None
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "local-qiskit")
    with pytest.raises(ValueError, match="Inconsistent"):
        QRMIService()
    monkeypatch.delenv("QRMI_JOB_QPU_TYPES")
    with pytest.raises(RuntimeError, match="QRMI_JOB_QPU_TYPES"):
        QRMIService()
    monkeypatch.setenv("local-qiskit_QRMI_JOB_ACQUISITION_TOKEN", "")
    with pytest.raises(InvalidInputError, match="needs a lease"):
        qrmi.task_start(Payload.QiskitPrimitive(input=json.dumps(examples.load("bell")["parameters"]),
                                                program_id="sampler"))
    token = qrmi.acquire()  # a handle's own lease is used for its tasks
    task = qrmi.task_start(Payload.QiskitPrimitive(input=json.dumps(examples.load("bell")["parameters"]),
                                                   program_id="sampler"))
    assert qrmi._wait(task).name == "Completed" and "PrimitiveResult" in qrmi.task_result(task).value
    qrmi.release(token)


def slow_sequence() -> str:
    """Ten atoms under a 4 µs pulse: seconds of exact emulation."""
    register = Register.from_coordinates([(7.0 * (i % 4), 7.0 * (i // 4)) for i in range(10)], prefix="q")
    sequence = Sequence(register.with_automatic_layout(AnalogDevice), AnalogDevice)
    sequence.declare_channel("ryd", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(4000, 3.0, 1.0, 0.0), "ryd")
    return sequence.to_abstract_repr()


def test_task_runner_cancels_on_sigterm(job_env: dict[str, str], tmp_path: Path, daemon: str) -> None:
    text = slow_sequence()
    (tmp_path / "slow.json").write_text(json.dumps({"sequence": json.loads(text), "job_runs": 10}))
    token = job_env["local-pulser_QRMI_JOB_ACQUISITION_TOKEN"]
    with Client(daemon) as qrmid:
        ahead = [qrmid.start_task("local-pulser", pulser_payload(text, 10), lease_token=token) for _ in range(4)]
        env = {key: value for key, value in os.environ.items() if not key.startswith("QRMI_")}
        runner = subprocess.Popen([sys.executable, "-m", "qrmid.task_runner", "local-pulser", "slow.json"],
                                  env={**env, **job_env}, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        try:
            assert runner.stdout is not None
            task_id = next(line for line in runner.stdout if "Task ID: " in line).split("Task ID: ")[1].strip()
            assert qrmid.task(task_id).state == pb.TASK_STATE_QUEUED  # behind the four ahead of it
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(timeout=60) == 1
            assert qrmid.task(task_id).state == pb.TASK_STATE_CANCELLED
        finally:
            runner.kill()
            for task in ahead:
                qrmid.stop_task(task.id)


def test_handle_is_shared_between_threads(job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in job_env.items():
        monkeypatch.setenv(key, value)
    qrmi = QuantumResource("local-qiskit", ResourceType.IBMQuantumSystem)
    payload = Payload.QiskitPrimitive(input=json.dumps(examples.load("bell")["parameters"]), program_id="sampler")

    def bell(_: int) -> TaskStatus:
        return qrmi._wait(qrmi.task_start(payload))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(bell, range(8))) == [TaskStatus.Completed] * 8
