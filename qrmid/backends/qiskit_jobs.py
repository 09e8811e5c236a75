"""Qiskit primitive V2 inputs in IBM's JSON form: parsing, validation and execution on qiskit-aer.

Imported by worker processes and by the validation thread; nothing here touches the event loop.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from qiskit import QuantumCircuit, qasm3
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit_ibm_runtime.json import RuntimeDecoder, RuntimeEncoder

from qrmid.backends.base import InvalidPayload

PROGRAMS = ("sampler", "estimator")
DEFAULT_SHOTS = 1024
DEFAULT_PRECISION = 0.015625


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a local simulator puts on its inputs."""

    max_qubits: int
    max_shots: int


def warm_up() -> None:
    """Import the simulator stack up front so a worker's first job does not pay for it."""
    import qiskit_aer.primitives  # noqa: F401


def parse(program_id: str, text: str, limits: Limits) -> tuple[list[SamplerPub] | list[EstimatorPub], int]:
    """The input's pubs, coerced and checked, and its number of shots; InvalidPayload when unusable."""
    if program_id not in PROGRAMS:
        raise InvalidPayload(f"program_id must be 'sampler' or 'estimator', not {program_id!r}")
    try:
        doc = json.loads(text, cls=RuntimeDecoder)
    except (json.JSONDecodeError, ValueError) as exc:
        raise InvalidPayload(f"input is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidPayload("input must be a JSON object with 'pubs' and 'version': 2")
    if doc.get("version") != 2:
        raise InvalidPayload(f"input 'version' must be 2 (Qiskit primitives V2), not {doc.get('version')!r}")
    raw_pubs = doc.get("pubs")
    if not isinstance(raw_pubs, list) or not raw_pubs:
        raise InvalidPayload("input needs a non-empty 'pubs' list")
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidPayload("input 'options' must be an object")
    if program_id == "sampler":
        shots = doc.get("shots") or options.get("default_shots") or DEFAULT_SHOTS
        pubs: list[Any] = [_sampler_pub(i, pub, shots, limits) for i, pub in enumerate(raw_pubs)]
        total = sum(pub.shots * max(pub.size, 1) for pub in pubs)
    else:
        precision = doc.get("precision") or options.get("default_precision") or DEFAULT_PRECISION
        pubs = [_estimator_pub(i, pub, precision, limits) for i, pub in enumerate(raw_pubs)]
        total = sum(math.ceil(pub.precision ** -2) * max(pub.size, 1) for pub in pubs)
    return pubs, total


def run(program_id: str, text: str, limits: Limits, seed: int | None) -> tuple[bytes, str]:
    """Run the input on qiskit-aer; return the PrimitiveResult as IBM encodes it, and a short log."""
    from qiskit_aer.primitives import EstimatorV2, SamplerV2

    pubs, shots = parse(program_id, text, limits)
    started = time.perf_counter()
    if program_id == "sampler":
        result = SamplerV2(seed=seed).run(pubs).result()
    else:
        result = EstimatorV2(options={"run_options": {"seed": seed}}).run(pubs).result()
    took = time.perf_counter() - started
    logs = f"{program_id}: {len(pubs)} pub(s), {shots} shots, ran in {took:.3f} s on qiskit-aer\n"
    return json.dumps(result, cls=RuntimeEncoder).encode(), logs


def _circuit(where: str, value: Any, limits: Limits) -> QuantumCircuit:
    if isinstance(value, str):
        try:
            circuit = qasm3.loads(value)
        except Exception as exc:  # the importer raises several types, all meaning "not valid OpenQASM 3"
            raise InvalidPayload(f"{where}: circuit is not valid OpenQASM 3: {exc}") from None
    elif isinstance(value, QuantumCircuit):
        circuit = value
    else:
        raise InvalidPayload(f"{where}: circuit must be an OpenQASM 3 string or an encoded QuantumCircuit")
    if circuit.num_qubits > limits.max_qubits:
        raise InvalidPayload(f"{where}: circuit has {circuit.num_qubits} qubits; this resource simulates at most "
                             f"{limits.max_qubits}")
    return circuit


def _as_list(where: str, pub: Any) -> list[Any]:
    if isinstance(pub, (str, QuantumCircuit)):
        return [pub]
    if isinstance(pub, list) and pub:
        return list(pub)
    raise InvalidPayload(f"{where} must be a circuit or a non-empty list starting with one")


def _sampler_pub(index: int, pub: Any, shots: Any, limits: Limits) -> SamplerPub:
    where = f"pub {index}"
    items = _as_list(where, pub)
    if len(items) > 3:
        raise InvalidPayload(f"{where}: a sampler pub is [circuit, parameter_values, shots]")
    items[0] = _circuit(where, items[0], limits)
    try:
        coerced = SamplerPub.coerce(tuple(items), shots=shots)
        coerced.validate()
    except (ValueError, TypeError) as exc:
        raise InvalidPayload(f"{where}: {exc}") from None
    if coerced.shots > limits.max_shots:
        raise InvalidPayload(f"{where}: {coerced.shots} shots; this resource allows at most {limits.max_shots}")
    return coerced


def _estimator_pub(index: int, pub: Any, precision: Any, limits: Limits) -> EstimatorPub:
    where = f"pub {index}"
    items = _as_list(where, pub)
    if not 2 <= len(items) <= 4:
        raise InvalidPayload(f"{where}: an estimator pub is [circuit, observables, parameter_values, precision]")
    items[0] = _circuit(where, items[0], limits)
    try:
        coerced = EstimatorPub.coerce(tuple(items), precision=precision)
        coerced.validate()
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidPayload(f"{where}: {exc}") from None
    return coerced
