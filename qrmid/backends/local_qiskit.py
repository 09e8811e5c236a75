"""``local-qiskit``: Qiskit Sampler/Estimator V2 inputs (IBM's JSON) run on qiskit-aer in worker processes."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Literal

from pydantic import Field

from qrmid.backends.base import InvalidPayload
from qrmid.backends.checks import Check
from qrmid.backends.payloads import Payload, PayloadKind, QiskitPrimitive
from qrmid.backends.pool import PoolAdapter
from qrmid.backends.settings import ResourceSettings

BASIS_GATES = ("cx", "id", "rz", "sx", "x")
INSTRUCTIONS = ("measure", "reset", "delay", "if_else", "for_loop", "while_loop", "switch_case")
DESCRIBED_AT = "2025-01-01T00:00:00Z"  # fixed: an ideal simulator's description never changes


class Settings(ResourceSettings):
    """Config keys of a ``local-qiskit`` resource."""

    type: Literal["local-qiskit"]
    slots: int = Field(2, ge=1, le=256, description="worker processes, i.e. tasks simulated at once")
    max_qubits: int = Field(24, ge=1, le=40, description="widest circuit accepted")
    max_shots: int = Field(100_000, ge=1, le=10**9, description="most shots in one pub")
    max_run_seconds: float = Field(3600, ge=0, le=7 * 86_400, description="a simulation running longer fails; 0: no limit")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="fixed simulator seed, for reproducible results")


class LocalQiskit(PoolAdapter):
    """An ideal qiskit-aer simulator behind the QRMI Qiskit-primitive interface."""

    payload_kinds = frozenset({PayloadKind.QISKIT_PRIMITIVE})

    def __init__(self, settings: Settings) -> None:
        from qrmid.backends import qiskit_jobs, qiskit_outline  # Qiskit loads only when a resource of this type exists

        self.jobs = qiskit_jobs
        self.outline = qiskit_outline.outline
        super().__init__(settings.slots, settings.max_run_seconds, prepare_worker)
        self.name = settings.name
        self.seed = settings.seed
        self.limits = qiskit_jobs.Limits(max_qubits=settings.max_qubits, max_shots=settings.max_shots,
                                         max_task_shots=settings.max_task_shots)
        self._target = ""

    async def start(self) -> None:
        await super().start()
        self._target = await asyncio.to_thread(self._describe)

    def _describe(self) -> str:
        return json.dumps(describe(self.name, self.limits.max_qubits, self.limits.max_shots))

    async def target(self) -> str:
        return self._target

    def metadata(self) -> dict[str, str]:
        return {"backend_name": self.name, "simulator": "qiskit-aer"}

    def validate(self, payload: Payload) -> Check:
        if not isinstance(payload, QiskitPrimitive):
            raise InvalidPayload("local-qiskit runs Qiskit primitive payloads only")
        return Check(self.jobs.check, (payload.program_id, payload.input, self.limits), self.outline)

    def job(self, payload: Payload) -> tuple[Any, tuple[Any, ...]]:
        assert isinstance(payload, QiskitPrimitive)
        return self.jobs.run, (payload.program_id, payload.input, self.limits, self.seed)


def prepare_worker() -> None:
    """Set up a simulator worker before qiskit-aer loads: its OpenMP threads sleep as soon as a simulation ends
    instead of spinning on the cores that the daemon, the validation workers and the next task need (unless the
    site sets OMP_WAIT_POLICY itself); then warm it up. Defined here, not in ``qiskit_jobs``: importing that module
    loads qiskit-aer and its OpenMP runtime, which reads the policy once, as it loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from qrmid.backends import qiskit_jobs

    qiskit_jobs.warm_up()


def describe(name: str, qubits: int, max_shots: int) -> dict[str, Any]:
    """The simulator as IBM's Quantum System API describes a backend: ``{"configuration", "properties"}``.

    It is an ideal device with IBM's basis gates on every pair of qubits and zero errors, so Qiskit's
    ``convert_to_target`` gives a target to transpile for, and the ISA circuits it yields run here as on a QPU.
    """
    from qiskit_aer import __version__ as aer_version

    pairs = [[a, b] for a in range(qubits) for b in range(qubits) if a != b]
    singles = [[q] for q in range(qubits)]
    configuration = {
        "backend_name": name, "backend_version": aer_version, "n_qubits": qubits, "basis_gates": list(BASIS_GATES),
        "gates": [{"name": gate, "parameters": ["theta"] if gate == "rz" else [], "qasm_def": "",
                   "coupling_map": pairs if gate == "cx" else singles} for gate in BASIS_GATES],
        "supported_instructions": [*BASIS_GATES, *INSTRUCTIONS], "coupling_map": pairs,
        "local": True, "simulator": True, "conditional": True, "open_pulse": False, "memory": True,
        "max_shots": max_shots, "max_experiments": 300, "online_date": DESCRIBED_AT,
        "description": "qiskit-aer ideal simulator (qrmid)",
    }

    def value(parameter: str, number: float, unit: str = "") -> dict[str, Any]:
        return {"name": parameter, "value": number, "unit": unit, "date": DESCRIBED_AT}

    ideal = [value("gate_error", 0.0), value("gate_length", 0.0, "ns")]
    properties = {
        "backend_name": name, "backend_version": aer_version, "last_update_date": DESCRIBED_AT, "general": [],
        "qubits": [[value("readout_error", 0.0), value("readout_length", 0.0, "ns")] for _ in range(qubits)],
        "gates": [{"gate": gate, "qubits": on, "name": gate + "_".join(map(str, on)), "parameters": ideal}
                  for gate in BASIS_GATES for on in (pairs if gate == "cx" else singles)],
    }
    return {"configuration": configuration, "properties": properties}
