"""The resource types qrmid knows: config schema and adapter class of each, by QRMI type string."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from qrmid.backends import local_pulser, local_qiskit, noop
from qrmid.backends.base import Adapter

ResourceConfig = Annotated[
    local_qiskit.Settings | local_pulser.Settings | noop.Settings,
    Field(discriminator="type"),
]

ADAPTERS: dict[str, type] = {
    "local-qiskit": local_qiskit.LocalQiskit,
    "local-pulser": local_pulser.LocalPulser,
    "noop": noop.Noop,
}


def build(settings: ResourceConfig) -> Adapter:
    """The adapter for one configured resource."""
    adapter: Adapter = ADAPTERS[settings.type](settings)
    return adapter
