"""Device catalogue (specs from pulser's AnalogDevice / DigitalAnalogDevice) and per-device admission.

A QPU device type holds one batch at a time, first come first served; an ``EMU_*`` type admits every batch at
once. A device whose status is not ``UP`` admits nothing and starts no job, but still queues them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from pulser.devices import AnalogDevice, DigitalAnalogDevice

from .config import DeviceOverride

QPU_TYPES = ("FRESNEL", "FRESNEL_CAN1", "FRESNEL_SA1", "FRESNEL8", "FRESNEL_RD")
EMULATOR_TYPES = ("EMU_FREE", "EMU_SV", "EMU_MPS", "EMU_C", "EMU_FRESNEL", "EMU_TN")
STATUSES = ("UP", "DOWN")
AVAILABILITIES = ("ACTIVE", "INACTIVE", "RETIRED")


def _specs(device_type: str) -> str:
    """The pulser device abstract repr for a device type, with ``name`` set to the type."""
    base = AnalogDevice if device_type in QPU_TYPES or device_type == "EMU_FRESNEL" else DigitalAnalogDevice
    specs = json.loads(base.to_abstract_repr())
    specs["name"] = device_type
    return json.dumps(specs)


@dataclass
class Device:
    """One device type: its specs, switchable state and the batches it holds or queues."""

    device_type: str
    status: str = "UP"
    availability: str = "ACTIVE"
    specs: str = ""
    max_atom_num: int = 0
    max_runs: int | None = None
    queue: list[str] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    max_active: int = 0
    error_jobs: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.specs = _specs(self.device_type)
        parsed = json.loads(self.specs)
        self.max_atom_num = int(parsed["max_atom_num"])
        self.max_runs = parsed.get("max_runs")

    @property
    def is_qpu(self) -> bool:
        return self.device_type in QPU_TYPES

    def describe(self) -> dict[str, Any]:
        """The Device object of ``GET /api/v1/devices`` and ``/api/v2/devices``."""
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pasqal-device/{self.device_type}")),
            "name": self.device_type,
            "device_type": self.device_type,
            "status": self.status,
            "availability": self.availability,
            "max_atom_num": self.max_atom_num,
            "is_emulator": not self.is_qpu,
        }

    async def admit(self, batch_id: str) -> None:
        """Wait until the batch may hold the device (FIFO on a QPU), then hold it."""
        async with self.changed:
            self.queue.append(batch_id)
            try:
                await self.changed.wait_for(
                    lambda: self.status == "UP" and (not self.is_qpu or (not self.active and self.queue[0] == batch_id))
                )
            finally:
                self.queue.remove(batch_id)
                self.changed.notify_all()
            self.active.add(batch_id)
            self.max_active = max(self.max_active, len(self.active))

    async def release(self, batch_id: str) -> None:
        """Let the next batch in."""
        async with self.changed:
            self.active.discard(batch_id)
            self.changed.notify_all()

    async def wait_up(self) -> None:
        """Return once the device status is ``UP``."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.status == "UP")

    async def update(self, changes: dict[str, Any]) -> None:
        """Apply ``status``, ``availability`` or ``error_jobs`` (next N jobs end in ERROR) from a test."""
        async with self.changed:
            if "status" in changes:
                self.status = _choice(changes["status"], STATUSES, "status")
            if "availability" in changes:
                self.availability = _choice(changes["availability"], AVAILABILITIES, "availability")
            if "error_jobs" in changes:
                self.error_jobs = int(changes["error_jobs"])
            self.changed.notify_all()


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}")
    return str(value)


def catalogue(overrides: dict[str, DeviceOverride]) -> dict[str, Device]:
    """Every known device type, with the configured initial status and availability."""
    unknown = set(overrides) - set(QPU_TYPES) - set(EMULATOR_TYPES)
    if unknown:
        raise ValueError(f"unknown device types in config: {sorted(unknown)}")
    devices = {}
    for device_type in QPU_TYPES + EMULATOR_TYPES:
        override = overrides.get(device_type, DeviceOverride())
        devices[device_type] = Device(device_type, status=override.status, availability=override.availability)
    return devices
