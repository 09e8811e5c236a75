"""Qiskit's V2 primitives on the job's one Qiskit resource through ``qrmi.primitives``: the resource's backend and
target, a parametrized GHZ circuit transpiled for it, sampled at θ = 0 and θ = π, and estimated with observables laid
out on the transpiled circuit. Prints one JSON report.

    python qiskit_primitives.py
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qrmid.qrmi.primitives import QRMIService, RuntimeJobV2
from qrmid.qrmi.primitives.ibm import EstimatorV2, SamplerV2, get_backend, get_target

WIDTH = 3
THETA = Parameter("theta")


def ghz(measure: bool) -> QuantumCircuit:
    """ry(θ) on qubit 0, copied onto the others: cos²(θ/2) of all zeros, sin²(θ/2) of all ones."""
    circuit = QuantumCircuit(WIDTH)
    circuit.ry(THETA, 0)
    for qubit in range(1, WIDTH):
        circuit.cx(0, qubit)
    if measure:
        circuit.measure_all()
    return circuit


def job_state(job: RuntimeJobV2) -> dict[str, Any]:
    return {"id": job.job_id(), "status": job.status().name, "done": job.done(), "running": job.running(),
            "final": job.in_final_state(), "errored": job.errored(), "cancelled": job.cancelled()}


def main() -> None:
    [resource] = QRMIService().resources()
    backend = get_backend(resource)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target = get_target(resource)
    report: dict[str, Any] = {"resource": resource.resource_id(), "backend_qubits": backend.num_qubits,
                              "target_qubits": target.num_qubits,
                              "get_target_warns": [w.category.__name__ for w in caught]}

    passes = generate_preset_pass_manager(optimization_level=1, target=target, seed_transpiler=11)
    sampled, estimated = passes.run(ghz(True)), passes.run(ghz(False))

    sampler = SamplerV2(resource, options={"default_shots": 500})
    job = sampler.run([(sampled, [[0.0], [math.pi]])])
    counts = job.result()[0].data.meas
    report["sampler"] = {"job": job_state(job), "logs": job.logs(),
                         "counts": [counts.get_counts(0), counts.get_counts(1)]}

    observables = [SparsePauliOp(label).apply_layout(estimated.layout) for label in ("ZII", "IZZ", "XXX")]
    estimator = EstimatorV2(resource, options={"default_precision": 0.02})
    job = estimator.run([(estimated, observables, [math.pi / 3])])
    [pub] = job.result()
    job.cancel()  # a finished job stays finished
    report["estimator"] = {"job": job_state(job), "evs": pub.data.evs.tolist(), "metadata": pub.metadata}
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
