"""Config keys of a ``qrmi`` resource: a QRMI resource type served through the ``qrmi`` package."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from qrmid.backends.payloads import PayloadKind
from qrmid.backends.settings import ResourceSettings

# QRMI's type strings (as in qrmi_config.json) and the ``qrmi.ResourceType`` member of each
RESOURCE_TYPES = {
    "ibm-quantum-system": "IBMQuantumSystem",
    "ibm-quantum-compute-service": "IBMQuantumComputeService",
    "qiskit-runtime-service": "IBMQiskitRuntimeService",
    "pasqal-cloud": "PasqalCloud",
    "pasqal-local": "PasqalLocal",
    "alice-bob-felis": "AliceBobFelis",
    "iqm-server": "IQMServer",
    "oqtopus": "OQTOPUS",
}

# the payload variants the API carries that each type runs; the others take payloads the API has no variant for
PAYLOAD_KINDS = {
    "ibm-quantum-system": frozenset({PayloadKind.QISKIT_PRIMITIVE}),
    "ibm-quantum-compute-service": frozenset({PayloadKind.QISKIT_PRIMITIVE}),
    "qiskit-runtime-service": frozenset({PayloadKind.QISKIT_PRIMITIVE}),
    "pasqal-cloud": frozenset({PayloadKind.PULSER_SEQUENCE}),
    "pasqal-local": frozenset({PayloadKind.PULSER_SEQUENCE}),
    "alice-bob-felis": frozenset[PayloadKind](),
    "iqm-server": frozenset[PayloadKind](),
    "oqtopus": frozenset[PayloadKind](),
}

ResourceType = Literal["ibm-quantum-system", "ibm-quantum-compute-service", "qiskit-runtime-service", "pasqal-cloud",
                       "pasqal-local", "alice-bob-felis", "iqm-server", "oqtopus"]
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Settings(ResourceSettings):
    """One resource of any QRMI type, run by QRMI's own client code (the ``qrmi`` package)."""

    type: Literal["qrmi"]
    resource_type: ResourceType = Field(description="QRMI resource type, as in qrmi_config.json")
    resource_id: str = Field("", description="the resource's name on the vendor side, as QRMI takes it (backend "
                             "name, device type, ...); default: the resource name")
    environment: dict[str, SecretStr] = Field(default_factory=dict, description="QRMI settings of the resource, "
                                              "un-prefixed (QRMI_IBM_QCS_ENDPOINT, ...); all values kept secret")
    slots: int = Field(4, ge=1, le=64, description="tasks in flight at once; one worker thread and one QRMI "
                       "handle each")
    max_qubits: int = Field(10_000, ge=1, le=1_000_000, description="refuse Qiskit inputs wider than this before queueing")
    max_shots: int = Field(10_000_000, ge=1, le=10**12, description="refuse inputs with more shots (or runs) than this")

    @field_validator("environment", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        """Numbers and booleans become the strings QRMI reads; keys must be usable as variable names."""
        if not isinstance(value, dict):
            return value
        for key in value:
            if not isinstance(key, str) or not ENV_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a QRMI setting name (letters, digits and _)")
        return {key: str(item).lower() if isinstance(item, bool) else str(item)
                if isinstance(item, (int, float)) else item for key, item in value.items()}

    @property
    def qrmi_id(self) -> str:
        return self.resource_id or self.name
