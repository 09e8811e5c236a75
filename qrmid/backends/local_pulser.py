"""``local-pulser``: Pulser sequences emulated with pulser-simulation in worker processes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from pydantic import Field, field_validator

from qrmid.backends.base import InvalidPayload
from qrmid.backends.checks import Check
from qrmid.backends.payloads import Payload, PayloadKind, PulserSequence
from qrmid.backends.pool import PoolAdapter
from qrmid.backends.settings import ResourceSettings

DEVICES = ("AnalogDevice", "DigitalAnalogDevice", "MockDevice")


class Settings(ResourceSettings):
    """Config keys of a ``local-pulser`` resource."""

    type: Literal["local-pulser"]
    device: str = Field("AnalogDevice", description="Pulser device whose spec the resource reports")
    slots: int = Field(1, ge=1, le=256, description="worker processes, i.e. sequences emulated at once")
    max_atoms: int = Field(10, ge=1, le=20, description="most atoms emulated (exact emulation is exponential)")
    max_runs: int = Field(2000, ge=1, le=10**9, description="most runs of one sequence (the device's own cap also applies)")
    max_run_seconds: float = Field(3600, ge=0, le=7 * 86_400, description="an emulation running longer fails; 0: no limit")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in DEVICES:
            raise ValueError(f"must be one of {', '.join(DEVICES)}")
        return value


class LocalPulser(PoolAdapter):
    """A Pulser emulator behind the QRMI Pasqal payload interface."""

    payload_kinds = frozenset({PayloadKind.PULSER_SEQUENCE})

    def __init__(self, settings: Settings) -> None:
        import pulser.devices  # Pulser loads only when a resource of this type exists

        from qrmid.backends import pulser_jobs

        self.jobs = pulser_jobs
        super().__init__(settings.slots, settings.max_run_seconds, pulser_jobs.warm_up)
        self.name = settings.name
        self.device = getattr(pulser.devices, settings.device)
        self.limits = pulser_jobs.limits_of(self.device, settings.max_atoms, settings.max_runs)
        # The device as this resource runs it: its atom and run caps are the resource's, not the hardware's.
        own = dataclasses.replace(self.device, max_atom_num=self.limits.max_atoms, max_runs=self.limits.max_runs)
        self._target = json.dumps([{"device_type": self.device.name, "specs": own.to_abstract_repr()}])

    async def target(self) -> str:
        return self._target

    def metadata(self) -> dict[str, str]:
        return {"backend_name": self.name, "device": self.device.name, "emulator": "pulser-simulation"}

    def validate(self, payload: Payload) -> Check:
        if not isinstance(payload, PulserSequence):
            raise InvalidPayload("local-pulser runs Pulser sequence payloads only")
        return Check(self.jobs.check, (payload.sequence, payload.job_runs, self.limits))

    def job(self, payload: Payload) -> tuple[Any, tuple[Any, ...]]:
        assert isinstance(payload, PulserSequence)
        return self.jobs.run, (payload.sequence, payload.job_runs, self.limits)
