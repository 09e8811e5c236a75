"""Primitive execution, run in a worker process: decode the input, check ISA circuits and estimator pub widths, run
on Aer, encode results.

The simulator is qiskit-aer's ``AerSimulator.from_backend`` of the device's fake backend, so results carry the
device's noise (or an ideal ``AerSimulator`` when the backend is configured with ``noise = false``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import ControlFlowOp, Qubit
from qiskit.primitives import PrimitiveResult, PubResult, SamplerPubResult
from qiskit.primitives.containers.bit_array import BitArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.transpiler import Target
from qiskit_aer import AerSimulator
from qiskit_aer.primitives import EstimatorV2, SamplerV2
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2
from qiskit_ibm_runtime.json import RuntimeDecoder, RuntimeEncoder

from .protocol import INVALID_INPUT, PRIMITIVE_FAILED, SimulationOutcome, SimulationRequest

DEFAULT_SHOTS = 4096
DEFAULT_PRECISION = 0.015625

Log = Callable[[str, str], None]


class JobError(Exception):
    """Ends the job ``Failed`` with ``reason_code``."""

    def __init__(self, reason_code: int, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


@lru_cache(maxsize=8)
def device(configuration_file: str, properties_file: str, noise: bool) -> tuple[Target, AerSimulator, int]:
    """The device's target, its simulator, and the time one shot takes (ns); cached per worker process."""
    fake_class = type(
        "EmulatedDevice",
        (FakeBackendV2,),
        {
            "dirname": "",
            "conf_filename": configuration_file,
            "props_filename": properties_file,
            "backend_name": "emulated_device",
        },
    )
    fake = fake_class()
    simulator = AerSimulator.from_backend(fake) if noise else AerSimulator()
    with open(configuration_file) as handle:
        rep_delay_us = float(json.load(handle).get("default_rep_delay", 250.0))
    return fake.target, simulator, int(rep_delay_us * 1000)


def warm(configuration_file: str, properties_file: str, noise: bool) -> None:
    """Load the libraries and the device once, so that the first job does not pay for it."""
    device(configuration_file, properties_file, noise)


def execute(request: SimulationRequest) -> SimulationOutcome:
    """Run one primitive input document; never raises (a failure becomes the outcome's reason)."""
    outcome = SimulationOutcome()

    def log(level: str, message: str) -> None:
        outcome.log.append((level, message))

    try:
        document = _decode(request.input_text)
        target, simulator, shot_ns = device(request.configuration_file, request.properties_file, request.noise)
        if request.program_id == "sampler":
            result, executions = _sample(document, target, simulator, request.seed, log)
        else:
            result, executions = _estimate(document, target, simulator, request.seed, request.pad_circuits, log)
        if document.get("support_qiskit", True):
            outcome.results = json.dumps(result, cls=RuntimeEncoder)
        else:
            outcome.results = json.dumps(_plain(result, request.program_id), default=str)
        outcome.quantum_nanoseconds = executions * shot_ns
        log("INFO", f"{request.program_id} finished: {len(result)} pub result(s), {executions} shot(s)")
    except JobError as exc:
        outcome.reason_code, outcome.reason_message = exc.reason_code, str(exc)
    except Exception as exc:  # any failure of the primitive itself ends the job Failed
        outcome.reason_code, outcome.reason_message = PRIMITIVE_FAILED, f"{type(exc).__name__}: {exc}"
    if outcome.reason_message:
        log("ERROR", outcome.reason_message)
    return outcome


def _decode(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text, cls=RuntimeDecoder)
    except ValueError as exc:
        raise JobError(INVALID_INPUT, f"Input is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise JobError(INVALID_INPUT, "Input must be a JSON object.")
    if document.get("version") != 2:
        raise JobError(INVALID_INPUT, f"Unsupported input version {document.get('version')!r}; expected 2.")
    if not isinstance(document.get("pubs"), list) or not document["pubs"]:
        raise JobError(INVALID_INPUT, "Input has no pubs.")
    return document


def _circuit(value: Any, index: int) -> QuantumCircuit:
    if isinstance(value, QuantumCircuit):
        return value
    if isinstance(value, str):
        try:
            return qasm3.loads(value)
        except Exception as exc:  # the importer raises many types
            raise JobError(INVALID_INPUT, f"Pub {index}: invalid OpenQASM 3 circuit: {exc}") from None
    raise JobError(INVALID_INPUT, f"Pub {index}: a circuit must be an OpenQASM 3 string or a QuantumCircuit.")


def _parameter_values(circuit: QuantumCircuit, values: Any) -> Any:
    """``null`` or ``[]`` for a circuit without parameters means no values."""
    if values is None or (circuit.num_parameters == 0 and hasattr(values, "__len__") and len(values) == 0):
        return None
    return values


def _check_isa(circuit: QuantumCircuit, target: Target, index: int) -> None:
    """Fail unless every instruction is in the target on the physical qubits it acts on."""
    if circuit.num_qubits > target.num_qubits:
        raise JobError(
            PRIMITIVE_FAILED,
            f"Pub {index}: the circuit has {circuit.num_qubits} qubits but the backend has {target.num_qubits}.",
        )
    _check_block(circuit, target, index, {q: i for i, q in enumerate(circuit.qubits)})


def _check_block(block: QuantumCircuit, target: Target, index: int, physical: dict[Qubit, int]) -> None:
    for instruction in block.data:
        operation = instruction.operation
        if operation.name == "barrier":
            continue
        if operation.name not in target.operation_names:
            raise JobError(PRIMITIVE_FAILED, f"Pub {index}: unknown instruction: {operation.name}")
        qargs = tuple(physical[q] for q in instruction.qubits)
        if isinstance(operation, ControlFlowOp):
            for inner in operation.blocks:
                _check_block(inner, target, index, dict(zip(inner.qubits, qargs, strict=True)))
        elif not target.instruction_supported(operation.name, qargs):
            raise JobError(
                PRIMITIVE_FAILED,
                f"Pub {index}: instruction {operation.name} on qubits {qargs} is not supported by the backend "
                "(the circuit is not ISA: it does not follow the coupling map).",
            )


def _fit_width(
    circuit: QuantumCircuit, observables: ObservablesArray, target: Target, pad: bool, index: int
) -> QuantumCircuit:
    """The circuit to pair with ``observables``: padded up to their width when ``pad``; otherwise as it is, and the
    job fails unless both are equally wide (as IBM's service refuses such a pub)."""
    if pad:
        return _widen(circuit, min(observables.num_qubits, target.num_qubits))
    if observables.size and circuit.num_qubits != observables.num_qubits:
        fix = (
            "A circuit read from OpenQASM 3 is only as wide as its highest used qubit: name the backend's last qubit "
            "in it (a barrier will do) or send it as QPY."
            if circuit.num_qubits < observables.num_qubits
            else "Lay the observables out on the circuit's qubits (observable.apply_layout(circuit.layout))."
        )
        raise JobError(
            INVALID_INPUT,
            f"Pub {index}: the number of qubits of the circuit ({circuit.num_qubits}) does not match the number of "
            f"qubits of the observables ({observables.num_qubits}). {fix}",
        )
    return circuit


def _widen(circuit: QuantumCircuit, num_qubits: int) -> QuantumCircuit:
    """Pad a circuit read from OpenQASM (which keeps only qubits up to the highest used) to ``num_qubits``."""
    if circuit.num_qubits >= num_qubits:
        return circuit
    wide = QuantumCircuit(num_qubits, *circuit.cregs, name=circuit.name, metadata=circuit.metadata)
    wide.compose(circuit, qubits=range(circuit.num_qubits), clbits=circuit.clbits, inplace=True)
    return wide


def _parts(pub: Any) -> list[Any]:
    return list(pub) if isinstance(pub, (list, tuple)) else [pub]


def _sample(
    document: dict[str, Any], target: Target, simulator: AerSimulator, seed: int | None, log: Log
) -> tuple[PrimitiveResult, int]:
    options = document.get("options") or {}
    default_shots = document.get("shots") or options.get("default_shots") or DEFAULT_SHOTS
    pubs = []
    for index, pub in enumerate(document["pubs"]):
        parts = _parts(pub)
        if not 1 <= len(parts) <= 3:
            raise JobError(INVALID_INPUT, f"Pub {index}: a sampler pub has 1 to 3 items, got {len(parts)}.")
        circuit = _circuit(parts[0], index)
        _check_isa(circuit, target, index)
        if len(parts) > 1:
            parts[1] = _parameter_values(circuit, parts[1])
        try:
            pubs.append(SamplerPub.coerce((circuit, *parts[1:]), shots=int(default_shots)))
        except (TypeError, ValueError) as exc:
            raise JobError(INVALID_INPUT, f"Pub {index}: {exc}") from None
        log("DEBUG", f"pub {index}: {circuit.num_qubits} qubits, {circuit.size()} instructions, {pubs[-1].shots} shots")
    result = SamplerV2.from_backend(simulator, seed=seed).run(pubs).result()
    pub_results = [
        SamplerPubResult(r.data, metadata={"shots": p.shots, "circuit_metadata": p.circuit.metadata or {}})
        for p, r in zip(pubs, result, strict=True)
    ]
    executions = sum(p.shots * p.parameter_values.size for p in pubs)
    return PrimitiveResult(pub_results, metadata={"version": 2}), executions


def _estimate(
    document: dict[str, Any], target: Target, simulator: AerSimulator, seed: int | None, pad: bool, log: Log
) -> tuple[PrimitiveResult, int]:
    options = document.get("options") or {}
    default_precision = document.get("precision") or options.get("default_precision") or DEFAULT_PRECISION
    pubs = []
    for index, pub in enumerate(document["pubs"]):
        parts = _parts(pub)
        if not 2 <= len(parts) <= 4:
            raise JobError(INVALID_INPUT, f"Pub {index}: an estimator pub has 2 to 4 items, got {len(parts)}.")
        circuit = _circuit(parts[0], index)
        _check_isa(circuit, target, index)
        try:
            observables = ObservablesArray.coerce(parts[1])
            circuit = _fit_width(circuit, observables, target, pad, index)
            if len(parts) > 2:
                parts[2] = _parameter_values(circuit, parts[2])
            pubs.append(EstimatorPub.coerce((circuit, observables, *parts[2:]), precision=float(default_precision)))
        except (TypeError, ValueError) as exc:
            raise JobError(INVALID_INPUT, f"Pub {index}: {exc}") from None
        log(
            "DEBUG", f"pub {index}: {circuit.num_qubits} qubits, shape {pubs[-1].shape}, precision {pubs[-1].precision}"
        )
    run_options = {} if seed is None else {"seed_simulator": seed}
    estimator = EstimatorV2.from_backend(simulator, options={"run_options": run_options})
    result = estimator.run(pubs).result()
    pub_results = []
    executions = 0
    for p, r in zip(pubs, result, strict=True):
        shots = math.ceil(1 / p.precision**2) if p.precision > 0 else DEFAULT_SHOTS
        executions += shots * math.prod(p.shape)
        metadata = {"target_precision": p.precision, "shots": shots, "circuit_metadata": p.circuit.metadata or {}}
        pub_results.append(PubResult(r.data, metadata=metadata))
    return PrimitiveResult(pub_results, metadata={"version": 2}), executions


def _hexstrings(bits: BitArray) -> list[Any]:
    """Samples as hex strings, nested by the pub's shape."""
    if bits.ndim == 0:
        return [hex(int(bitstring, 2)) for bitstring in bits.get_bitstrings()]
    return [_hexstrings(bits[i]) for i in range(bits.shape[0])]


def _plain(result: PrimitiveResult, program_id: str) -> dict[str, Any]:
    """The results form for clients without Qiskit (``support_qiskit: false``)."""
    pub_results = []
    for pub in result:
        if program_id == "sampler":
            data = {name: {"samples": _hexstrings(bits), "num_bits": bits.num_bits} for name, bits in pub.data.items()}
        else:
            data = {"evs": pub.data.evs.tolist(), "stds": pub.data.stds.tolist()}
        pub_results.append({"data": data, "metadata": pub.metadata})
    return {"results": pub_results, "metadata": result.metadata}
