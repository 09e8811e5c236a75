"""Checks on CreateBatch / CreateJob payloads, parsing the pulser sequences in a worker thread.

A job has ``runs`` (1 … the device's ``max_runs``) and either ``variables`` for the batch sequence or its own
``sequence``, never both. The built sequence must parse and fit the device's ``max_atom_num``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pulser import Sequence

from .devices import Device
from .envelope import ApiError


@dataclass(frozen=True)
class JobSpec:
    """A validated job request."""

    runs: int
    variables: dict[str, Any]
    sequence: str | None


@lru_cache(maxsize=64)
def _parse(sequence: str) -> Sequence[Any]:
    return Sequence.from_abstract_repr(sequence)


def _atoms(sequence: str, variables: dict[str, Any]) -> int:
    """The register size of the sequence once built with ``variables``."""
    parsed = _parse(sequence)
    if parsed.is_parametrized() or parsed.is_register_mappable():
        parsed = parsed.build(**variables)
    return len(parsed.register.qubit_ids)


def sequence_device_name(sequence: str) -> str:
    """The ``device.name`` a sequence was built for (blocking: call it in a thread)."""
    try:
        return str(_parse(sequence).device.name)
    except Exception as exc:  # pulser raises many types for malformed input
        raise ApiError(422, f"Invalid sequence: {exc}") from exc


def _check_shape(index: int, raw: Any) -> JobSpec:
    if not isinstance(raw, dict):
        raise ApiError(422, f"jobs[{index}] must be an object")
    runs = raw.get("runs")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ApiError(422, f"jobs[{index}].runs must be an integer >= 1")
    variables = raw.get("variables") or {}
    sequence = raw.get("sequence")
    if not isinstance(variables, dict):
        raise ApiError(422, f"jobs[{index}].variables must be an object")
    if sequence is not None and not isinstance(sequence, str):
        raise ApiError(422, f"jobs[{index}].sequence must be a string")
    if variables and sequence is not None:
        raise ApiError(422, f"jobs[{index}] has both variables and its own sequence")
    return JobSpec(runs=runs, variables=variables, sequence=sequence)


def _check_program(index: int, spec: JobSpec, batch_sequence: str | None, device: Device) -> None:
    program = spec.sequence if spec.sequence is not None else batch_sequence
    if program is None:
        raise ApiError(422, f"jobs[{index}] has no sequence and the batch has no sequence_builder")
    try:
        atoms = _atoms(program, spec.variables)
    except Exception as exc:  # parse and build errors of every kind become 422
        raise ApiError(422, f"jobs[{index}]: invalid sequence: {exc}") from exc
    if atoms > device.max_atom_num:
        raise ApiError(422, f"jobs[{index}] uses {atoms} atoms; {device.device_type} allows {device.max_atom_num}")


def _check_all(raw_jobs: list[Any], batch_sequence: str | None, device: Device) -> list[JobSpec]:
    specs = []
    for index, raw in enumerate(raw_jobs):
        spec = _check_shape(index, raw)
        if device.max_runs is not None and spec.runs > device.max_runs:
            raise ApiError(422, f"jobs[{index}].runs={spec.runs} exceeds max_runs={device.max_runs}")
        _check_program(index, spec, batch_sequence, device)
        specs.append(spec)
    return specs


async def check_jobs(raw_jobs: Any, batch_sequence: str | None, device: Device) -> list[JobSpec]:
    """Validate a list of CreateJob payloads against the batch sequence and the device; ApiError 422 if not."""
    if not isinstance(raw_jobs, list):
        raise ApiError(422, "jobs must be a list")
    return await asyncio.to_thread(_check_all, raw_jobs, batch_sequence, device)
