"""ISA check: the service does not transpile, so a circuit must use the backend's gates on its couplings."""

from __future__ import annotations

from typing import Any

from qiskit import QuantumCircuit

from qrmid.backends import qiskit_jobs
from qrmid.backends.base import InvalidPayload
from qrmid.backends.checks import InputBounds

ALWAYS = frozenset({"measure", "barrier", "delay", "reset"})


class Isa:
    """The instruction set of one backend, from its configuration."""

    def __init__(self, configuration: dict[str, Any]) -> None:
        self.name = configuration.get("backend_name", "the backend")
        self.gates = ALWAYS | set(configuration.get("basis_gates", [])) | set(
            configuration.get("supported_instructions", []))
        coupling = configuration.get("coupling_map") or []
        self.edges = {tuple(edge) for edge in coupling}

    def check(self, where: str, circuit: QuantumCircuit) -> None:
        for instruction in circuit.data:
            name = instruction.operation.name
            if name not in self.gates:
                raise InvalidPayload(f"{where}: instruction {name!r} is not in {self.name}'s instruction set "
                                     f"({', '.join(sorted(self.gates))}); transpile the circuit for this backend")
            qubits = tuple(circuit.find_bit(qubit).index for qubit in instruction.qubits)
            if len(qubits) == 2 and self.edges and qubits not in self.edges:
                raise InvalidPayload(f"{where}: {name} on qubits {qubits} is not a coupling of {self.name}; "
                                     "transpile the circuit for this backend")


def check_input(bounds: InputBounds, program_id: str, text: str, limits: qiskit_jobs.Limits, isa: Isa | None) -> int:
    """The input's number of shots once it is fully checked, its circuits against ``isa`` when the backend's is
    known (run by a validation worker)."""
    pubs, shots = qiskit_jobs.parse(program_id, text, limits, bounds)
    if isa is not None:
        for index, pub in enumerate(pubs):
            isa.check(f"pub {index}", pub.circuit)
    return shots
