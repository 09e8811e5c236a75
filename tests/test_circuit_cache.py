"""A circuit sent again (a hybrid loop's) is parsed once per process, and each task still gets a circuit of its own
with its own parameter values."""

from __future__ import annotations

import dataclasses
import json
import math

from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import Parameter

from qrmid.backends import circuit_cache, qiskit_jobs
from qrmid.client import Client, estimator_payload
from qrmid.results import summarize

BELL = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\nc = measure q;\n'


def rotation() -> str:
    theta = Parameter("theta")
    circuit = QuantumCircuit(1)
    circuit.ry(theta, 0)
    return qasm3.dumps(circuit)


def test_a_circuit_seen_before_is_not_parsed_again_and_each_caller_gets_its_own_copy() -> None:
    limits = qiskit_jobs.Limits(max_qubits=10, max_shots=10**6)
    text = json.dumps({"pubs": [[BELL, None, 10]], "version": 2})
    qiskit_jobs.parse("sampler", text, limits)
    before = dataclasses.replace(circuit_cache.counts)
    (first,), _ = qiskit_jobs.parse("sampler", text, limits)
    (second,), _ = qiskit_jobs.parse("sampler", text, limits)
    after = circuit_cache.counts
    assert (after.reused - before.reused, after.parsed - before.parsed) == (2, 0), "parsed once, then reused"
    assert first.circuit == second.circuit and first.circuit is not second.circuit
    first.circuit.x(0)  # a caller changing its circuit changes nobody else's
    assert qiskit_jobs.parse("sampler", text, limits)[0][0].circuit == second.circuit


def test_a_loop_of_one_circuit_with_new_parameter_values_gets_each_call_right(local_daemon: str) -> None:
    circuit = rotation()
    with Client(local_daemon) as qrmid:
        for angle, expected in ((0.0, 1.0), (math.pi, -1.0), (math.pi / 2, 0.0), (0.0, 1.0)):
            _, data = qrmid.run("local-qiskit", estimator_payload(
                {"pubs": [[circuit, {"Z": 1.0}, [angle]]], "version": 2}))
            assert abs(summarize(data)["pubs"][0]["evs"] - expected) < 0.1, (angle, summarize(data))
