"""Qiskit primitives V2 and a ``BackendV2`` backed by qrmid, for any resource that runs Qiskit primitives
(``local-qiskit``, ``ibm-quantum-system``).

    backend = get_backend("local-qiskit")                   # the resource's target, to transpile for
    isa = generate_preset_pass_manager(1, backend=backend).run(circuit)
    job = SamplerV2(backend).run([isa])                     # or SamplerV2("local-qiskit")
    counts = job.result()[0].data.meas.get_counts()

Circuits travel QPY-encoded in IBM's runtime JSON (``RuntimeEncoder``) by default, which keeps parameters,
registers and metadata exact; ``circuit_format="qasm3"`` sends OpenQASM 3 text instead. Results come back as the
backend produced them and decode into Qiskit's own ``PrimitiveResult``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from qiskit import QuantumCircuit, qasm3
from qiskit.primitives import BaseEstimatorV2, BasePrimitiveJob, BaseSamplerV2, PrimitiveResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub, EstimatorPubLike
from qiskit.primitives.containers.sampler_pub import SamplerPub, SamplerPubLike
from qiskit.providers import BackendV2, JobStatus, Options
from qiskit.providers.jobstatus import JOB_FINAL_STATES
from qiskit.transpiler import Target
from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder
from qiskit_ibm_runtime.json import RuntimeEncoder
from qiskit_ibm_runtime.utils.backend_converter import convert_to_target
from qiskit_ibm_runtime.utils.backend_decoder import configuration_from_server_data, properties_from_server_data

from qrmid.client import Client, Run, TaskFailed, estimator_payload, sampler_payload
from qrmid.integrations.job_env import lease_token
from qrmid.v1 import quantum_resources_pb2 as pb

__all__ = ["EstimatorOptions", "EstimatorV2", "QrmidBackend", "QrmidJob", "SamplerOptions", "SamplerV2", "TaskFailed",
           "get_backend"]

CircuitFormat = Literal["qpy", "qasm3"]

JOB_STATUS = {
    pb.TASK_STATE_QUEUED: JobStatus.QUEUED,
    pb.TASK_STATE_RUNNING: JobStatus.RUNNING,
    pb.TASK_STATE_COMPLETED: JobStatus.DONE,
    pb.TASK_STATE_FAILED: JobStatus.ERROR,
    pb.TASK_STATE_CANCELLED: JobStatus.CANCELLED,
}


@dataclass
class SamplerOptions:
    """Options of :class:`SamplerV2`."""

    default_shots: int = 1024
    """Shots of the pubs that name none, when ``run`` is given none."""
    run_options: dict[str, Any] = field(default_factory=dict)
    """Sent as the input's ``options`` (IBM's Sampler V2 options)."""
    circuit_format: CircuitFormat = "qpy"
    """How circuits travel: ``"qpy"`` (exact) or ``"qasm3"``."""


@dataclass
class EstimatorOptions:
    """Options of :class:`EstimatorV2`."""

    default_precision: float = 0.015625
    """Precision of the pubs that name none, when ``run`` is given none."""
    run_options: dict[str, Any] = field(default_factory=dict)
    """Sent as the input's ``options`` (IBM's Estimator V2 options)."""
    circuit_format: CircuitFormat = "qpy"
    """How circuits travel: ``"qpy"`` (exact) or ``"qasm3"``."""


def encode_circuit(circuit: QuantumCircuit, circuit_format: CircuitFormat) -> QuantumCircuit | str:
    """The circuit as it goes into the input: itself (``RuntimeEncoder`` makes it QPY) or OpenQASM 3 text that
    reads back with as many qubits as the circuit has."""
    if circuit_format == "qpy":
        return circuit
    return qasm3.dumps(_full_width(circuit), disable_constants=True, allow_aliasing=True,
                       experimental=qasm3.ExperimentalFeatures.SWITCH_CASE_V1)


def _full_width(circuit: QuantumCircuit) -> QuantumCircuit:
    """The circuit, with a barrier on its last qubit when that qubit is physical and idle.

    OpenQASM 3 cannot declare physical qubits: a transpiled circuit (one with a layout) is written with ``$n``
    references only, and is read back with as many qubits as the highest one used. Its observables, laid out with
    ``apply_layout(isa.layout)``, keep the backend's width, and the service refuses a pub whose circuit and
    observables differ in width. A barrier is no operation and is exempt from the ISA check, so naming the last
    qubit in one keeps circuit and observables of one width, as they are in QPY.
    """
    if circuit.layout is None or not circuit.num_qubits:
        return circuit
    last = circuit.qubits[-1]
    if any(last in instruction.qubits for instruction in circuit.data):
        return circuit
    widened = circuit.copy()
    widened.barrier(last)
    return widened


def sampler_input(pubs: Iterable[SamplerPub], shots: int, options: dict[str, Any],
                  circuit_format: CircuitFormat = "qpy") -> str:
    """IBM's Sampler V2 input JSON for coerced pubs."""
    encoded = [(encode_circuit(pub.circuit, circuit_format),
                pub.parameter_values.as_array(pub.circuit.parameters), pub.shots) for pub in pubs]
    return json.dumps({"pubs": encoded, "shots": shots, "options": options, "version": 2, "support_qiskit": True},
                      cls=RuntimeEncoder)


def estimator_input(pubs: Iterable[EstimatorPub], precision: float, options: dict[str, Any],
                    circuit_format: CircuitFormat = "qpy") -> str:
    """IBM's Estimator V2 input JSON for coerced pubs."""
    encoded = [(encode_circuit(pub.circuit, circuit_format), pub.observables.tolist(),
                pub.parameter_values.as_array(pub.circuit.parameters), pub.precision) for pub in pubs]
    return json.dumps({"pubs": encoded, "precision": precision, "options": options, "version": 2,
                       "support_qiskit": True}, cls=RuntimeEncoder)


class PrimitiveJob(BasePrimitiveJob[PrimitiveResult, JobStatus]):
    """A primitive job whose state questions are all answered from ``status()``."""

    def done(self) -> bool:
        return self.status() == JobStatus.DONE

    def running(self) -> bool:
        return self.status() == JobStatus.RUNNING

    def cancelled(self) -> bool:
        return self.status() == JobStatus.CANCELLED

    def errored(self) -> bool:
        return self.status() == JobStatus.ERROR

    def in_final_state(self) -> bool:
        return self.status() in JOB_FINAL_STATES


class QrmidJob(PrimitiveJob):
    """A primitive job running as a qrmid task; its ``job_id()`` is the task id.

    The task runs in one RunTask call, followed on the connection's thread from ``run()`` on: ``status()`` reads the
    state that call last streamed and ``result()`` waits for the result it brings, without further calls.
    """

    def __init__(self, connection: Client, run: Run) -> None:
        super().__init__(run.id)
        self._connection = connection
        self._run = run
        self._result: PrimitiveResult | None = None

    def status(self) -> JobStatus:
        return JOB_STATUS[self._run.state()]

    def cancel(self) -> None:
        """Cancel the task (a finished task stays as it is)."""
        self._run.task = self._connection.stop_task(self.job_id())

    def result(self, timeout: float | None = None) -> PrimitiveResult:
        """Wait for the task (TimeoutError after ``timeout`` seconds) and decode its result; ``TaskFailed`` if it
        failed or was cancelled."""
        if self._result is None:
            _, data = self._run.outcome(timeout)
            self._result = ResultDecoder.decode(data.decode())
        return self._result

    def logs(self) -> str:
        return self._connection.logs(self.job_id())

    @property
    def reason(self) -> str:
        """Why the task failed or was cancelled, as qrmid reports it."""
        self._run.state()
        return self._run.task.reason


class _Runner:
    """What both primitives share: the resource, its connection and lease."""

    def __init__(self, mode: str | QrmidBackend, address: str | None, lease: str | None) -> None:
        if isinstance(mode, QrmidBackend):
            self.resource, self.connection = mode.name, mode.connection
        else:
            self.resource, self.connection = mode, Client(address)
        self.lease = lease_token(self.resource) if lease is None else lease

    def submit(self, payload: pb.Payload) -> QrmidJob:
        return QrmidJob(self.connection, self.connection.launch(self.resource, payload, lease_token=self.lease))


class SamplerV2(BaseSamplerV2):
    """Qiskit's Sampler V2 on a qrmid resource.

    ``mode`` is a resource name or a backend from :func:`get_backend`; ``options`` as :class:`SamplerOptions`;
    ``address`` defaults to ``$QRMID_ADDRESS``; ``lease_token`` to the job's lease (see ``lease_token``).
    """

    def __init__(self, mode: str | QrmidBackend, *, options: dict[str, Any] | None = None,
                 address: str | None = None, lease_token: str | None = None) -> None:
        self._runner = _Runner(mode, address, lease_token)
        self._options = SamplerOptions(**(options or {}))

    @property
    def options(self) -> SamplerOptions:
        return self._options

    def run(self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None) -> QrmidJob:
        shots = self._options.default_shots if shots is None else shots
        coerced = [SamplerPub.coerce(pub, shots) for pub in pubs]
        for pub in coerced:
            pub.validate()
        text = sampler_input(coerced, shots, self._options.run_options, self._options.circuit_format)
        return self._runner.submit(sampler_payload(text))


class EstimatorV2(BaseEstimatorV2):
    """Qiskit's Estimator V2 on a qrmid resource; arguments as :class:`SamplerV2`, ``options`` as
    :class:`EstimatorOptions`."""

    def __init__(self, mode: str | QrmidBackend, *, options: dict[str, Any] | None = None,
                 address: str | None = None, lease_token: str | None = None) -> None:
        self._runner = _Runner(mode, address, lease_token)
        self._options = EstimatorOptions(**(options or {}))

    @property
    def options(self) -> EstimatorOptions:
        return self._options

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None) -> QrmidJob:
        precision = self._options.default_precision if precision is None else precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        for pub in coerced:
            pub.validate()
        text = estimator_input(coerced, precision, self._options.run_options, self._options.circuit_format)
        return self._runner.submit(estimator_payload(text))


def parse_target(text: str, use_fractional_gates: bool = False) -> tuple[Any, Any, Target]:
    """IBM's ``{"configuration", "properties"}`` JSON as Qiskit models and a transpiler ``Target``;
    ValueError when it does not describe a Qiskit backend."""
    try:
        doc = json.loads(text)
        configuration = configuration_from_server_data(doc["configuration"], use_fractional_gates=use_fractional_gates)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the resource's target is not an IBM backend description: {exc}") from None
    if configuration is None:
        raise ValueError("the resource's target has a configuration Qiskit cannot read")
    properties = doc.get("properties") and properties_from_server_data(
        doc["properties"], use_fractional_gates=use_fractional_gates)
    return configuration, properties, convert_to_target(configuration=configuration, properties=properties)


class QrmidBackend(BackendV2):
    """A qrmid resource as a Qiskit ``BackendV2``: its target, for transpiling; run through the primitives."""

    def __init__(self, resource: str, connection: Client, use_fractional_gates: bool = False) -> None:
        self.connection = connection
        self._configuration, self._properties, self._target = parse_target(
            connection.target(resource), use_fractional_gates)
        super().__init__(name=resource, backend_version=str(self._configuration.backend_version),
                         description=getattr(self._configuration, "description", None))

    @classmethod
    def _default_options(cls) -> Options:
        return Options(**asdict(SamplerOptions()))

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> None:
        return None

    def configuration(self) -> Any:
        """The backend configuration (``QasmBackendConfiguration``)."""
        return self._configuration

    def properties(self) -> Any:
        """The backend properties (``BackendProperties``), or None when the resource reports none."""
        return self._properties

    def run(self, run_input: Any, **options: Any) -> Any:
        raise NotImplementedError("qrmid runs circuits through the primitives: SamplerV2(backend).run(pubs)")


def get_backend(resource: str, *, address: str | None = None, use_fractional_gates: bool = False) -> QrmidBackend:
    """The resource as a ``BackendV2`` built from its target; ``grpc.RpcError`` NOT_FOUND for unknown names,
    ValueError when the resource is not a Qiskit backend."""
    return QrmidBackend(resource, Client(address), use_fractional_gates)

