"""``local-qiskit``: Qiskit Sampler/Estimator V2 inputs (IBM's JSON) run on qiskit-aer in worker processes."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from pydantic import Field

from qrmid.backends.base import InvalidPayload
from qrmid.backends.settings import ResourceSettings
from qrmid.backends.payloads import Payload, PayloadKind, QiskitPrimitive
from qrmid.backends.pool import PoolAdapter


class Settings(ResourceSettings):
    """Config keys of a ``local-qiskit`` resource."""

    type: Literal["local-qiskit"]
    slots: int = Field(2, ge=1, le=256, description="worker processes, i.e. tasks simulated at once")
    max_qubits: int = Field(24, ge=1, le=40, description="widest circuit accepted")
    max_shots: int = Field(100_000, ge=1, description="most shots in one pub")
    max_run_seconds: float = Field(3600, ge=0, description="a simulation running longer fails; 0: no limit")
    seed: int | None = Field(None, description="fixed simulator seed, for reproducible results")


class LocalQiskit(PoolAdapter):
    """An ideal qiskit-aer simulator behind the QRMI Qiskit-primitive interface."""

    payload_kinds = frozenset({PayloadKind.QISKIT_PRIMITIVE})

    def __init__(self, settings: Settings) -> None:
        from qrmid.backends import qiskit_jobs  # Qiskit loads only when a resource of this type exists

        self.jobs = qiskit_jobs
        super().__init__(settings.slots, settings.max_run_seconds, qiskit_jobs.warm_up)
        self.name = settings.name
        self.seed = settings.seed
        self.limits = qiskit_jobs.Limits(max_qubits=settings.max_qubits, max_shots=settings.max_shots)
        self._target = ""

    async def start(self) -> None:
        await super().start()
        self._target = await asyncio.to_thread(self._describe)

    def _describe(self) -> str:
        from qiskit_aer import AerSimulator

        configuration: dict[str, Any] = AerSimulator().configuration().to_dict()
        configuration.update(backend_name=self.name, n_qubits=self.limits.max_qubits,
                             max_shots=self.limits.max_shots, description="qiskit-aer ideal simulator (qrmid)")
        return json.dumps({"configuration": configuration, "properties": None}, default=str)

    async def target(self) -> str:
        return self._target

    def metadata(self) -> dict[str, str]:
        return {"backend_name": self.name, "simulator": "qiskit-aer"}

    def validate(self, payload: Payload) -> int:
        if not isinstance(payload, QiskitPrimitive):
            raise InvalidPayload("local-qiskit runs Qiskit primitive payloads only")
        _, shots = self.jobs.parse(payload.program_id, payload.input, self.limits)
        return shots

    def job(self, payload: Payload) -> tuple[Any, tuple[Any, ...]]:
        assert isinstance(payload, QiskitPrimitive)
        return self.jobs.run, (payload.program_id, payload.input, self.limits, self.seed)
