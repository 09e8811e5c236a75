"""Pulser sequences in abstract representation: parsing, validation against a device, and emulation.

Imported by worker processes and by the validation thread; nothing here touches the event loop.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass

from pulser import Sequence
from pulser.devices import Device, VirtualDevice

from qrmid.backends.base import InvalidPayload


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a local emulator puts on its inputs: the device's, tightened by the site's config."""

    max_atoms: int
    max_runs: int
    max_duration_ns: int | None


def limits_of(device: Device | VirtualDevice, max_atoms: int, max_runs: int) -> Limits:
    """The stricter of the device's bounds and the configured ones."""
    atoms = min(max_atoms, device.max_atom_num) if device.max_atom_num else max_atoms
    runs = min(max_runs, device.max_runs) if device.max_runs else max_runs
    return Limits(atoms, runs, device.max_sequence_duration)


def warm_up() -> None:
    """Import the emulator stack up front so a worker's first job does not pay for it."""
    import pulser_simulation  # noqa: F401


def parse(text: str, runs: int, limits: Limits) -> Sequence:
    """The sequence, checked against ``limits``; InvalidPayload when unusable."""
    if not 1 <= runs <= limits.max_runs:
        raise InvalidPayload(f"job_runs must be between 1 and {limits.max_runs}, not {runs}")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"sequence is not valid JSON: {exc}") from None
    try:
        sequence = Sequence.from_abstract_repr(text)
    except Exception as exc:  # schema, device and construction errors all mean "not a usable sequence"
        detail = getattr(exc, "message", None) or str(exc)
        raise InvalidPayload(f"sequence is not a valid Pulser abstract representation: {detail[:500]}") from None
    if sequence.is_parametrized() or sequence.is_register_mappable():
        raise InvalidPayload("sequence has unbuilt variables or an unmapped register; build it before sending")
    atoms = len(sequence.register.qubit_ids)
    if atoms > limits.max_atoms:
        raise InvalidPayload(f"sequence has {atoms} atoms; this resource emulates at most {limits.max_atoms}")
    duration = sequence.get_duration()
    if limits.max_duration_ns and duration > limits.max_duration_ns:
        raise InvalidPayload(f"sequence lasts {duration} ns; the device allows at most {limits.max_duration_ns} ns")
    if duration == 0:
        raise InvalidPayload("sequence has no pulses to run")
    return sequence


def run(text: str, runs: int, limits: Limits) -> tuple[bytes, str]:
    """Emulate the sequence with pulser-simulation and sample ``runs`` final bitstrings."""
    from pulser_simulation import QutipEmulator

    sequence = parse(text, runs, limits)
    started = time.perf_counter()
    counts: Counter[str] = QutipEmulator.from_sequence(sequence).run().sample_final_state(N_samples=runs)
    took = time.perf_counter() - started
    logs = f"{len(sequence.register.qubit_ids)} atoms, {runs} runs, emulated in {took:.3f} s with pulser-simulation\n"
    return json.dumps({"counter": dict(sorted(counts.items()))}).encode(), logs
