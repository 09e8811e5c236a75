"""QRMI's data types with the ``qrmi`` package's names, values and string forms."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class _Enum(IntEnum):
    """An int-valued enum shown as ``Type.Member``, as ``qrmi``'s enums are."""

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    __repr__ = __str__


class TaskStatus(_Enum):
    Queued = 0
    Running = 1
    Completed = 2
    Failed = 3
    Cancelled = 4


class ResourceType(_Enum):
    """``qrmi``'s resource types, plus qrmid's local simulators (``LocalQiskit``, ``LocalPulser``)."""

    IBMQuantumSystem = 0
    IBMQiskitRuntimeService = 1
    IBMQuantumComputeService = 2
    PasqalCloud = 3
    PasqalLocal = 4
    AliceBobFelis = 5
    IQMServer = 6
    OQTOPUS = 7
    LocalQiskit = 100
    LocalPulser = 101


TYPE_NAMES: dict[str, ResourceType] = {
    "ibm-quantum-system": ResourceType.IBMQuantumSystem,
    "qiskit-runtime-service": ResourceType.IBMQiskitRuntimeService,
    "ibm-quantum-compute-service": ResourceType.IBMQuantumComputeService,
    "pasqal-cloud": ResourceType.PasqalCloud,
    "pasqal-local": ResourceType.PasqalLocal,
    "alice-bob-felis": ResourceType.AliceBobFelis,
    "iqm-server": ResourceType.IQMServer,
    "oqtopus": ResourceType.OQTOPUS,
    "local-qiskit": ResourceType.LocalQiskit,
    "local-pulser": ResourceType.LocalPulser,
}


class ResourceStatusCode(_Enum):
    Online = 0
    Offline = 1
    Paused = 2


@dataclass(frozen=True)
class ResourceCapacity:
    available_slots: int
    max_slots: int


@dataclass(frozen=True)
class ResourceStatus:
    """A resource's state and capacity, as ``QuantumResource.status()`` reports it."""

    status: ResourceStatusCode
    status_reason: str | None = None
    healthy: bool | None = None
    busy: bool | None = None
    capacity: ResourceCapacity | None = None
    pending_job_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``status`` in lower case (``"online"``)."""
        capacity = self.capacity and {"available_slots": self.capacity.available_slots,
                                      "max_slots": self.capacity.max_slots}
        return {"status": self.status.name.lower(), "status_reason": self.status_reason, "healthy": self.healthy,
                "busy": self.busy, "capacity": capacity, "pending_job_count": self.pending_job_count}


@dataclass(frozen=True)
class Target:
    """A device description: ``value`` is the vendor's JSON text."""

    value: str


@dataclass(frozen=True)
class TaskResult:
    """A task's result: ``value`` is the vendor's text."""

    value: str


@dataclass(frozen=True)
class QiskitPrimitive:
    input: str
    program_id: str


@dataclass(frozen=True)
class PasqalCloud:
    sequence: str
    job_runs: int


@dataclass(frozen=True)
class AliceBobFelis:
    human_qir: str
    input_params: str


@dataclass(frozen=True)
class IQMServer:
    iqmjson: str
    job_type: str
    use_timeslot: bool | None = None
    tag: str | None = None


@dataclass(frozen=True)
class Oqtopus:
    job_spec: dict[str, Any] = field(default_factory=dict)


class Payload:
    """Task payloads: ``Payload.QiskitPrimitive(input=, program_id=)``, ``Payload.PasqalCloud(sequence=,
    job_runs=)``; the other QRMI variants exist but qrmid has no resource that runs them."""

    QiskitPrimitive = QiskitPrimitive
    PasqalCloud = PasqalCloud
    AliceBobFelis = AliceBobFelis
    IQMServer = IQMServer
    Oqtopus = Oqtopus
