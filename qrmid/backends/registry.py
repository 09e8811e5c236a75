"""The resource types qrmid knows: config schema and adapter class of each, by QRMI type string."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from qrmid.backends import ibm_quantum_system, local_pulser, local_qiskit, noop, pasqal_cloud, qrmi_package
from qrmid.backends.base import Adapter

ResourceConfig = Annotated[
    local_qiskit.Settings | local_pulser.Settings | ibm_quantum_system.Settings | noop.Settings
    | pasqal_cloud.Settings | qrmi_package.Settings,
    Field(discriminator="type"),
]

ADAPTERS: dict[str, type] = {
    "local-qiskit": local_qiskit.LocalQiskit,
    "local-pulser": local_pulser.LocalPulser,
    "ibm-quantum-system": ibm_quantum_system.IbmQuantumSystem,
    "noop": noop.Noop,
    "pasqal-cloud": pasqal_cloud.PasqalCloud,
    "qrmi": qrmi_package.QrmiPackage,
}


def build(settings: ResourceConfig) -> Adapter:
    """The adapter for one configured resource."""
    adapter: Adapter = ADAPTERS[settings.type](settings)
    return adapter
