"""Qiskit primitive V2 inputs in IBM's JSON form: parsing, validation and execution on qiskit-aer.

Imported by simulator and validation worker processes; nothing here touches the event loop.
"""

from __future__ import annotations

import difflib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from qiskit import QuantumCircuit, qasm3
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit_ibm_runtime.json import RuntimeEncoder

from qrmid.backends import circuit_cache, qasm_errors, runtime_json
from qrmid.backends.base import InvalidPayload
from qrmid.backends.checks import InputBounds
from qrmid.backends.payloads import utf8_bytes

PROGRAMS = ("sampler", "estimator")
DEFAULT_SHOTS = 1024
DEFAULT_PRECISION = 0.015625
DEFAULT_MAX_TASK_SHOTS = 10**9
# The keys IBM's Sampler V2 and Estimator V2 inputs may have (ibm-quantum-schemas, and what qiskit-ibm-runtime
# sends), at the top level and in "options"; anything else is a mistake that would otherwise be ignored silently.
INPUT_KEYS = {"sampler": ("pubs", "shots", "options", "version", "support_qiskit"),
              "estimator": ("pubs", "precision", "options", "version", "support_qiskit", "resilience_level",
                            "seed_estimator")}
_COMMON_OPTIONS = ("default_shots", "dynamical_decoupling", "execution", "twirling", "simulator", "experimental")
OPTION_KEYS = {"sampler": _COMMON_OPTIONS,
               "estimator": ("default_precision", *_COMMON_OPTIONS, "resilience", "seed_estimator")}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a resource puts on its inputs: qubits, shots of one pub, and shots of the whole task (every pub
    times its parameter sets; an estimator pub counts ceil(precision**-2) shots per set)."""

    max_qubits: int
    max_shots: int
    max_task_shots: int = DEFAULT_MAX_TASK_SHOTS


def warm_up() -> None:
    """Run a tiny OpenQASM 3 input up front, so a worker's first job pays for no import and no first simulation."""
    circuit = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[1] c;\nqubit[1] q;\nx q[0];\nc[0] = measure q[0];\n'
    run("sampler", json.dumps({"pubs": [[circuit, None, 1]], "version": 2}), Limits(max_qubits=1, max_shots=1), None)


def check(bounds: InputBounds, program_id: str, text: str, limits: Limits) -> int:
    """The input's number of shots once it is fully checked (run by a validation worker)."""
    return parse(program_id, text, limits, bounds)[1]


def parse(program_id: str, text: str, limits: Limits,
          bounds: InputBounds | None = None) -> tuple[list[SamplerPub] | list[EstimatorPub], int]:
    """The input's pubs, coerced and checked, and its number of shots; InvalidPayload when unusable.

    ``bounds`` limits what reading the input may build; None for an input checked already.
    """
    if program_id not in PROGRAMS:
        raise InvalidPayload(f"program_id must be 'sampler' or 'estimator', not {program_id!r}")
    doc = runtime_json.loads(text, bounds.max_decoded_bytes if bounds else None)
    if not isinstance(doc, dict):
        raise InvalidPayload("input must be a JSON object with 'pubs' and 'version': 2")
    _known_keys(program_id, doc)
    if doc.get("version") != 2:
        raise InvalidPayload(f"input 'version' must be 2 (Qiskit primitives V2), not {doc.get('version')!r}")
    raw_pubs = doc.get("pubs")
    if not isinstance(raw_pubs, list) or not raw_pubs:
        raise InvalidPayload("input needs a non-empty 'pubs' list")
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidPayload("input 'options' must be an object")
    _known_keys(program_id, options, options=True)
    counter = _ShotCounter(limits.max_task_shots)
    pubs: list[Any]
    if program_id == "sampler":
        shots = doc.get("shots") or options.get("default_shots") or DEFAULT_SHOTS
        pubs = [_sampler_pub(i, pub, shots, limits, bounds, counter) for i, pub in enumerate(raw_pubs)]
    else:
        precision = _first(doc.get("precision"), options.get("default_precision"), DEFAULT_PRECISION)
        pubs = [_estimator_pub(i, pub, precision, limits, bounds, counter) for i, pub in enumerate(raw_pubs)]
    return pubs, counter.total


def run(program_id: str, text: str, limits: Limits, seed: int | None) -> tuple[bytes, str]:
    """Run the input on qiskit-aer; return the PrimitiveResult as IBM encodes it, and a short log."""
    from qiskit_aer.primitives import EstimatorV2, SamplerV2

    before = circuit_cache.counts.reused
    pubs, shots = parse(program_id, text, limits)
    reused = circuit_cache.counts.reused - before
    started = time.perf_counter()
    primitive = SamplerV2(seed=seed) if program_id == "sampler" else EstimatorV2(options={"run_options": {"seed": seed}})
    # What ``primitive.run(pubs).result()`` gives, simulated in this thread: ``run`` starts a thread for each call
    # (Qiskit's PrimitiveJob), which costs about as much as simulating a small circuit. The pubs are checked already.
    result = primitive._run(pubs)
    took = time.perf_counter() - started
    logs = (f"{program_id}: {len(pubs)} pub(s), {shots} shots, {reused} circuit(s) already parsed, ran in {took:.3f} s "
            "on qiskit-aer\n")
    return json.dumps(result, cls=RuntimeEncoder).encode(), logs


class _ShotCounter:
    """Adds up the shots of a task's pubs, refusing the task as soon as they pass the resource's limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    def add(self, where: str, per_set: int, sets: int) -> None:
        self.total += per_set * max(sets, 1)  # Python integers: no overflow, however large the declared shape
        if self.total > self.limit:
            raise InvalidPayload(f"{where}: {per_set} shots for each of {sets} parameter set(s) bring the task to "
                                 f"{self.total} shots; this resource takes at most {self.limit} shots per task "
                                 "(max_task_shots): send fewer parameter sets or shots, or split the task")


def _known_keys(program_id: str, doc: dict[str, Any], options: bool = False) -> None:
    """InvalidPayload naming the first key of a ``program_id`` input (or of its ``options``) that IBM's schema does
    not have, with the keys it may have and the one the user likely meant."""
    keys = OPTION_KEYS if options else INPUT_KEYS
    other = "estimator" if program_id == "sampler" else "sampler"
    article = {"sampler": "a", "estimator": "an"}
    for key in doc:
        if key in keys[program_id]:
            continue
        if key in keys[other]:
            hint = f" ({article[other]} {other} key: is this {article[other]} {other} task?)"
        else:
            close = difflib.get_close_matches(str(key), keys[program_id], n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = f"{article[program_id]} {program_id} input" + ("'s 'options'" if options else "")
        raise InvalidPayload(f"unknown key {key!r}{hint}: {what} takes only {', '.join(keys[program_id])} "
                             "(IBM's primitive V2 input schema)")


def _first(*values: Any) -> Any:
    return next(value for value in values if value is not None)


def _circuit(where: str, value: Any, limits: Limits, bounds: InputBounds | None) -> QuantumCircuit:
    if isinstance(value, str):
        size = utf8_bytes(value)
        if bounds is not None and size > bounds.max_circuit_bytes:
            raise InvalidPayload(f"{where}: the OpenQASM 3 circuit is {size} bytes; the limit is "
                                 f"{bounds.max_circuit_bytes} bytes per circuit ([validation] max_circuit_bytes): "
                                 "split the work, or send the circuit as an encoded QuantumCircuit (QPY)")
        try:
            circuit = circuit_cache.circuit("qasm3", value, lambda text: (qasm3.loads(text), 0)).circuit
        except RecursionError:
            raise InvalidPayload(f"{where}: the OpenQASM 3 circuit nests too deeply to be read") from None
        except MemoryError:  # the worker's memory limit: not the input's syntax
            raise
        except Exception as exc:  # the importer raises several types, all meaning "not valid OpenQASM 3"
            raise InvalidPayload(f"{where}: circuit is not valid OpenQASM 3: {qasm_errors.describe(exc)}") from None
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


def _sampler_pub(index: int, pub: Any, shots: Any, limits: Limits, bounds: InputBounds | None,
                 counter: _ShotCounter) -> SamplerPub:
    where = f"pub {index}"
    items = _as_list(where, pub)
    if len(items) > 3:
        raise InvalidPayload(f"{where}: a sampler pub is [circuit, parameter_values, shots]")
    items[0] = _circuit(where, items[0], limits, bounds)
    try:
        coerced = SamplerPub.coerce(tuple(items), shots=shots)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidPayload(f"{where}: {exc}") from None
    assert coerced.shots is not None  # coerce gave it the default
    if coerced.shots > limits.max_shots:
        raise InvalidPayload(f"{where}: {coerced.shots} shots; this resource allows at most {limits.max_shots}")
    counter.add(where, coerced.shots, math.prod(coerced.shape))  # from the declared shape, before any use of it
    try:
        coerced.validate()
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidPayload(f"{where}: {exc}") from None
    return coerced


def _estimator_pub(index: int, pub: Any, precision: Any, limits: Limits, bounds: InputBounds | None,
                   counter: _ShotCounter) -> EstimatorPub:
    where = f"pub {index}"
    items = _as_list(where, pub)
    if not 2 <= len(items) <= 4:
        raise InvalidPayload(f"{where}: an estimator pub is [circuit, observables, parameter_values, precision]")
    items[0] = _circuit(where, items[0], limits, bounds)
    try:
        coerced = EstimatorPub.coerce(tuple(items), precision=precision)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidPayload(f"{where}: {exc}") from None
    counter.add(where, _shots_for(where, coerced.precision, counter.limit), math.prod(coerced.shape))
    try:
        coerced.validate()
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidPayload(f"{where}: {exc}") from None
    return coerced


def _shots_for(where: str, precision: Any, limit: int) -> int:
    """The shots an estimator needs per parameter set for ``precision``: ceil(precision**-2)."""
    if isinstance(precision, bool) or not isinstance(precision, (int, float)) or not math.isfinite(precision) \
            or precision <= 0:
        raise InvalidPayload(f"{where}: precision must be a positive finite number, not {precision!r}")
    if precision * precision * limit < 1:  # no float overflow: 1e-200 squared is 0.0
        raise InvalidPayload(f"{where}: precision {precision:g} needs more than {limit} shots per parameter set; "
                             f"this resource takes at most {limit} shots per task (max_task_shots): ask for a "
                             f"precision of {limit ** -0.5:.3g} or more")
    return max(math.ceil(1 / (precision * precision)), 1)
