"""Qiskit's SamplerV2/EstimatorV2 and BackendV2 backed by qrmid, against a real daemon's local-qiskit resource and
an ibm-quantum-system resource on the IBM Quantum System API emulator.

Results are checked against what Qiskit's own reference primitives return for the same pubs: the same data
fields, shapes, bit counts and (within sampling error) values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import grpc
import numpy as np
import pytest
from daemons import subprocess_daemon
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm3, transpile
from qiskit.circuit import Parameter
from qiskit.primitives import BitArray, StatevectorEstimator, StatevectorSampler
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp

from qrmid.emulators.launch import start_emulator, start_moto
from qrmid.integrations.qiskit import EstimatorV2, SamplerV2, TaskFailed, encode_circuit, get_backend

API_KEY, CRN = "qrmid-test-key", "crn:v1:local:qrmid-tests"

THETA = Parameter("θ")


def registers_circuit() -> QuantumCircuit:
    """|1> measured into a 1-bit register ``alpha``, and a Bell pair into a 2-bit register ``beta``."""
    q = QuantumRegister(3)
    alpha, beta = ClassicalRegister(1, "alpha"), ClassicalRegister(2, "beta")
    circuit = QuantumCircuit(q, alpha, beta)
    circuit.x(0)
    circuit.h(1)
    circuit.cx(1, 2)
    circuit.measure(0, alpha[0])
    circuit.measure([1, 2], beta)
    return circuit


def rotation_circuit(measure: bool) -> QuantumCircuit:
    circuit = QuantumCircuit(1)
    circuit.ry(THETA, 0)
    if measure:
        circuit.measure_all()
    return circuit


@pytest.mark.parametrize("circuit_format", ["qpy", "qasm3"])
def test_sampler_results_match_qiskit_reference(local_daemon: str, circuit_format: str) -> None:
    angles = np.array([[0.0, np.pi / 2, np.pi], [np.pi, 0.0, np.pi]])  # a (2, 3) sweep of one parameter
    pubs = [(registers_circuit(),), (rotation_circuit(True), angles[..., None], 200)]
    sampler = SamplerV2("local-qiskit", address=local_daemon, options={"circuit_format": circuit_format})
    job = sampler.run(pubs, shots=300)
    result = job.result()
    reference = StatevectorSampler(seed=1).run(pubs, shots=300).result()

    assert job.done() and job.status() == JobStatus.DONE
    assert len(result) == len(reference) == 2
    assert result.metadata == {"version": 2}
    for ours, theirs in zip(result, reference, strict=True):
        assert list(ours.data) == list(theirs.data)
        for name in ours.data:
            bits, expected = getattr(ours.data, name), getattr(theirs.data, name)
            assert isinstance(bits, BitArray)
            assert (bits.shape, bits.num_shots, bits.num_bits) == (expected.shape, expected.num_shots,
                                                                   expected.num_bits)
    alpha, beta = result[0].data.alpha, result[0].data.beta
    assert alpha.get_counts() == {"1": 300}
    assert set(beta.get_counts()) <= {"00", "11"} and sum(beta.get_counts().values()) == 300
    assert result[0].metadata["shots"] == 300 and result[1].metadata["shots"] == 200
    sweep = result[1].data.meas
    assert sweep.get_counts((0, 0)) == {"0": 200} and sweep.get_counts((0, 2)) == {"1": 200}
    assert sweep.get_counts((1, 0)) == {"1": 200} and sweep.get_counts((1, 1)) == {"0": 200}
    assert 40 < sweep.get_counts((0, 1)).get("1", 0) < 160  # θ = π/2: an even coin


def test_estimator_broadcasts_like_qiskit_reference(local_daemon: str) -> None:
    observables = [[SparsePauliOp("Z")], [SparsePauliOp("X")]]                   # shape (2, 1)
    angles = np.linspace(0, np.pi, 4)[:, None]                                   # shape (4,) of one parameter
    pubs = [(rotation_circuit(False), observables, angles), (rotation_circuit(False), "Z", [0.0], 0.01)]
    result = EstimatorV2("local-qiskit", address=local_daemon).run(pubs, precision=0.02).result()
    reference = StatevectorEstimator().run(pubs).result()

    assert len(result) == 2 and result.metadata == {"version": 2}
    for ours, theirs in zip(result, reference, strict=True):
        assert ours.data.evs.shape == ours.data.stds.shape == theirs.data.evs.shape
        np.testing.assert_allclose(ours.data.evs, theirs.data.evs, atol=0.1)
    assert result[0].data.evs.shape == (2, 4) and result[1].data.evs.shape == ()
    assert result[0].metadata["target_precision"] == 0.02 and result[1].metadata["target_precision"] == 0.01


# Bell pair on q0, q1; |1> on q2; q3 idle. Labels are little-endian: the rightmost letter is q0.
LAID_OUT_EXPECTATIONS = {"IIZZ": 1.0, "IIXX": 1.0, "IZII": -1.0, "ZIII": 1.0, "IIIZ": 0.0}


def estimate_laid_out(address: str, resource: str, layout: list[int], circuit_format: str) -> None:
    """A circuit transpiled onto physical qubits below the backend's last, with observables laid out the
    documented way (``apply_layout(isa.layout)``), gives the right expectation values in ``circuit_format``."""
    backend = get_backend(resource, address=address)
    circuit = QuantumCircuit(4)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.x(2)
    isa = transpile(circuit, backend, initial_layout=layout, optimization_level=1, seed_transpiler=5)
    observables = [SparsePauliOp(label).apply_layout(isa.layout) for label in LAID_OUT_EXPECTATIONS]
    used = {isa.find_bit(qubit).index for instruction in isa.data for qubit in instruction.qubits}
    assert isa.num_qubits == observables[0].num_qubits == backend.num_qubits > max(used) + 1
    assert qasm3.loads(encode_circuit(isa, "qasm3")).num_qubits == backend.num_qubits  # as the service reads it

    estimator = EstimatorV2(backend, options={"circuit_format": circuit_format})
    [pub] = estimator.run([(isa, observables)], precision=0.02).result()
    assert pub.data.evs.shape == (len(LAID_OUT_EXPECTATIONS),)
    np.testing.assert_allclose(pub.data.evs, list(LAID_OUT_EXPECTATIONS.values()), atol=0.1)


@pytest.mark.parametrize("circuit_format", ["qpy", "qasm3"])
def test_estimator_on_laid_out_circuit_narrower_than_backend(local_daemon: str, circuit_format: str) -> None:
    estimate_laid_out(local_daemon, "local-qiskit", [3, 5, 7, 20], circuit_format)  # 26 qubits, none above $20


def slow_circuit(qubits: int = 20, layers: int = 60) -> QuantumCircuit:
    circuit = QuantumCircuit(qubits)
    for layer in range(layers):
        for q in range(qubits):
            circuit.rx(0.1 * (layer + q), q)
        for q in range(layer % 2, qubits - 1, 2):
            circuit.cx(q, q + 1)
    circuit.measure_all()
    return circuit


def test_job_status_cancel_and_failure(local_daemon: str) -> None:
    sampler = SamplerV2("local-qiskit", address=local_daemon)
    busy = [sampler.run([slow_circuit()]) for _ in range(2)]  # the resource's two slots
    queued = sampler.run([registers_circuit()])
    assert queued.status() == JobStatus.QUEUED
    with pytest.raises(TimeoutError, match="not finished"):
        queued.result(timeout=0.5)
    queued.cancel()

    assert queued.status() == JobStatus.CANCELLED and queued.cancelled() and queued.in_final_state()
    with pytest.raises(TaskFailed, match="cancelled"):
        queued.result()
    for job in busy:
        assert job.result()[0].data.meas.num_bits == 20
        assert job.status() == JobStatus.DONE and "qiskit-aer" in job.logs()


def test_too_wide_circuit_is_refused_at_submission(local_daemon: str) -> None:
    wide = QuantumCircuit(27)
    wide.h(range(27))
    wide.measure_all()
    with pytest.raises(grpc.RpcError) as refused:
        SamplerV2("local-qiskit", address=local_daemon).run([wide])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "26" in refused.value.details()


def test_backend_from_target_transpiles_to_isa_circuits_that_run(local_daemon: str) -> None:
    backend = get_backend("local-qiskit", address=local_daemon)
    circuit = QuantumCircuit(3)
    circuit.h(0)
    circuit.ccx(0, 1, 2)   # not native: needs decomposition
    circuit.cx(0, 1)
    circuit.swap(1, 2)
    circuit.cx(1, 2)
    circuit.measure_all()
    isa = transpile(circuit, backend, optimization_level=1, seed_transpiler=7)

    assert backend.name == "local-qiskit" and backend.num_qubits == 26
    assert len(backend.coupling_map.get_edges()) == 26 * 25  # every ordered pair
    assert set(isa.count_ops()) <= {"rz", "sx", "x", "cx", "measure", "barrier"}
    for instruction in isa.data:
        if instruction.operation.name != "barrier":
            qargs = tuple(isa.find_bit(q).index for q in instruction.qubits)
            assert backend.target.instruction_supported(instruction.operation.name, qargs)
    counts = SamplerV2(backend).run([isa], shots=400).result()[0].data.meas.get_counts()
    assert set(counts) == {"000", "101"} and sum(counts.values()) == 400  # q0 and q2 entangled, q1 idle
    with pytest.raises(NotImplementedError, match="SamplerV2"):
        backend.run(isa)


def test_get_backend_refuses_unknown_and_non_qiskit_resources(local_daemon: str) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        get_backend("nope", address=local_daemon)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ValueError, match="not an IBM backend description"):
        get_backend("local-pulser", address=local_daemon)


@pytest.fixture(scope="module")
def ibm_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A daemon with an ibm-quantum-system resource ``perth`` on the IBM Quantum System API emulator (noiseless
    fake Perth, 7 qubits) and a moto S3. The emulator checks estimator pub widths strictly, as IBM's service does: a
    pub whose circuit and observables differ in width fails its job."""
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "perth"\n'
                    'device = "perth"\nseed = 7\nnoise = false\npub_widths = "strict"\n')
    s3, emulator = start_moto(), start_emulator(path)
    try:
        boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key="s").create_bucket(Bucket="qrmid-jobs")
        keys = {"poll_interval": 0.05, "QRMI_IBM_QS_ENDPOINT": emulator.url, "QRMI_IBM_QS_IAM_ENDPOINT": emulator.url,
                "QRMI_IBM_QS_IAM_APIKEY": API_KEY, "QRMI_IBM_QS_SERVICE_CRN": CRN,
                "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "k", "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": "s",
                "QRMI_IBM_QS_S3_ENDPOINT": s3.url, "QRMI_IBM_QS_S3_BUCKET": "qrmid-jobs",
                "QRMI_IBM_QS_S3_REGION": "us-east-1"}
        lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in keys.items())
        with subprocess_daemon(f'[[resources]]\ntype = "ibm-quantum-system"\nname = "perth"\n{lines}\n') as (address, _):
            yield address
    finally:
        emulator.stop()
        s3.stop()


def test_primitives_on_ibm_quantum_system(ibm_daemon: str) -> None:
    backend = get_backend("perth", address=ibm_daemon)
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    measured = bell.measure_all(inplace=False)
    isa, isa_unmeasured = transpile([measured, bell], backend, optimization_level=1, seed_transpiler=3)

    assert backend.num_qubits == 7 and backend.properties() is not None
    assert len(backend.coupling_map.get_edges()) < 7 * 6  # a real device's sparse connectivity
    counts = SamplerV2(backend).run([isa], shots=500).result()[0].data.meas.get_counts()
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 500
    observable = SparsePauliOp("ZZ").apply_layout(isa_unmeasured.layout)
    [zz] = EstimatorV2(backend).run([(isa_unmeasured, observable)]).result()
    assert zz.data.evs == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("circuit_format", ["qpy", "qasm3"])
def test_estimator_on_laid_out_circuit_on_ibm_quantum_system(ibm_daemon: str, circuit_format: str) -> None:
    estimate_laid_out(ibm_daemon, "perth", [0, 1, 2, 4], circuit_format)  # Perth's 7 qubits, none above $4


@pytest.mark.parametrize("circuit_format", ["qpy", "qasm3"])
def test_estimator_pub_keeps_the_backend_width_on_a_strict_ibm_quantum_system(ibm_daemon: str,
                                                                              circuit_format: str) -> None:
    """The emulator, like IBM's service, fails a pub whose circuit and observables differ in width: a Bell pair
    transpiled onto Perth's qubits 0 and 1, with observables laid out on all 7, runs in either encoding."""
    backend = get_backend("perth", address=ibm_daemon)
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    isa = transpile(bell, backend, initial_layout=[0, 1], optimization_level=1, seed_transpiler=3)
    expectations = {"ZZ": 1.0, "XX": 1.0, "ZI": 0.0}
    observables = [SparsePauliOp(label).apply_layout(isa.layout) for label in expectations]

    [pub] = EstimatorV2(backend, options={"circuit_format": circuit_format}).run([(isa, observables)],
                                                                                 precision=0.02).result()
    np.testing.assert_allclose(pub.data.evs, list(expectations.values()), atol=0.1)
