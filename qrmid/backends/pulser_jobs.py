"""Pulser sequences in abstract representation: parsing, validation against a device, and emulation.

Imported by emulator and validation worker processes; nothing here touches the event loop.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pulser import Sequence
from pulser.devices import Device, VirtualDevice

from qrmid.backends.base import InvalidPayload
from qrmid.backends.checks import InputBounds


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


def check(bounds: InputBounds, text: str, runs: int, limits: Limits, device: str | None = None) -> int:
    """The sequence's number of runs once it is fully checked (run by a validation worker)."""
    parse(text, runs, limits, bounds, device)
    return runs


def parse(text: str, runs: int, limits: Limits, bounds: InputBounds | None = None,
          device: str | None = None) -> Sequence:
    """The sequence, checked against ``limits``; InvalidPayload when unusable.

    ``bounds`` limits what reading the sequence may build (None for a sequence checked already); ``device`` names
    the only device the resource runs (None: any device within ``limits``).
    """
    if not 1 <= runs <= limits.max_runs:
        raise InvalidPayload(f"job_runs must be between 1 and {limits.max_runs}, not {runs}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"sequence is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidPayload("sequence nests arrays or objects too deeply to be read") from None
    if bounds is not None:
        _count(doc, limits, bounds, device)
    try:
        sequence = Sequence.from_abstract_repr(text)
    except RecursionError:
        raise InvalidPayload("sequence nests arrays or objects too deeply to be read") from None
    except MemoryError:  # the worker's memory limit: not the input's syntax
        raise
    except Exception as exc:  # schema, device and construction errors all mean "not a usable sequence"
        detail = getattr(exc, "message", None) or str(exc)
        raise InvalidPayload(f"sequence is not a valid Pulser abstract representation: {detail[:500]}") from None
    if device is not None and sequence.device.name != device:
        raise _elsewhere(sequence.device.name, device)
    if sequence.is_parametrized() or sequence.is_register_mappable():
        raise InvalidPayload("sequence has unbuilt variables or an unmapped register; build it before sending")
    _check_atoms(len(sequence.register.qubit_ids), limits, device)
    duration = sequence.get_duration()
    if limits.max_duration_ns and duration > limits.max_duration_ns:
        raise InvalidPayload(f"sequence lasts {duration} ns; the device allows at most {limits.max_duration_ns} ns")
    if duration == 0:
        raise InvalidPayload("sequence has no pulses to run")
    return sequence


def _count(doc: Any, limits: Limits, bounds: InputBounds, device: str | None) -> None:
    """Check the sequence's device, atoms and layout traps from its JSON, before Pulser builds a register
    (whose distance checks take memory quadratic in the atoms)."""
    if not isinstance(doc, dict):
        raise InvalidPayload("sequence must be a JSON object (Pulser's abstract representation)")
    named = doc.get("device", {}).get("name") if isinstance(doc.get("device"), dict) else None
    if device is not None and isinstance(named, str) and named != device:
        raise _elsewhere(named, device)
    if isinstance(doc.get("register"), list):
        _check_atoms(len(doc["register"]), limits, device)
    layouts = [doc.get("layout")]
    if isinstance(doc.get("device"), dict) and isinstance(doc["device"].get("pre_calibrated_layouts"), list):
        layouts += doc["device"]["pre_calibrated_layouts"]
    for layout in layouts:
        traps = layout.get("coordinates") if isinstance(layout, dict) else None
        if isinstance(traps, list) and len(traps) > bounds.max_layout_traps:
            raise InvalidPayload(f"sequence has a register layout of {len(traps)} traps; the limit is "
                                 f"{bounds.max_layout_traps} ([validation] max_layout_traps)")


def _check_atoms(atoms: int, limits: Limits, device: str | None) -> None:
    if atoms > limits.max_atoms:
        holder = f"{device} takes" if device else "this resource emulates"
        raise InvalidPayload(f"sequence has {atoms} atoms; {holder} at most {limits.max_atoms}")


def _elsewhere(named: str, device: str) -> InvalidPayload:
    return InvalidPayload(f"sequence is built for device {named!r}, but this resource runs on {device!r}: build it "
                          "on the device from GetTarget")


def run(text: str, runs: int, limits: Limits) -> tuple[bytes, str]:
    """Emulate the sequence with pulser-simulation and sample ``runs`` final bitstrings."""
    from pulser_simulation import QutipEmulator

    sequence = parse(text, runs, limits)
    started = time.perf_counter()
    counts: Counter[str] = QutipEmulator.from_sequence(sequence).run().sample_final_state(N_samples=runs)
    took = time.perf_counter() - started
    logs = f"{len(sequence.register.qubit_ids)} atoms, {runs} runs, emulated in {took:.3f} s with pulser-simulation\n"
    return json.dumps({"counter": dict(sorted(counts.items()))}).encode(), logs
