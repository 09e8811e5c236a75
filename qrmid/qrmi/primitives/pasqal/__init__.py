"""``qrmi.primitives.pasqal``'s device helper on qrmid: ``get_device``."""

from __future__ import annotations

from pulser import DigitalAnalogDevice
from pulser.devices import Device

from qrmid.integrations.pulser import devices_of
from qrmid.qrmi.resource import QuantumResource

__all__ = ["get_device"]


def get_device(qrmi: QuantumResource) -> Device:
    """The resource's Pulser device: the one named like the resource, else the first its target lists
    (``DigitalAnalogDevice`` for resources named as emulators, as in ``qrmi``)."""
    if "emu" in qrmi.resource_id().lower():
        return DigitalAnalogDevice
    devices = devices_of(qrmi.target().value)
    return devices.get(qrmi.resource_id()) or next(iter(devices.values()))
