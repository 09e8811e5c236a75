"""Pulser on the job's one Pasqal resource through ``qrmi.pulser``: the device, three far-apart atoms driven by a
π pulse, run as a closed batch of two jobs through ``QPUBackend``, then sent straight to the connection, whose
``submit`` waits by default; the last batch's logs, and a cancel of a batch that has ended. Prints one JSON report.

    python pulser_batches.py
"""

from __future__ import annotations

import json
import math
from typing import Any

import pulser
from pulser import Pulse, Register, Sequence
from pulser.backend.remote import JobParams

from qrmid.qrmi.primitives.pasqal import get_device
from qrmid.qrmi.pulser import PulserQRMIConnection
from qrmid.qrmi.pulser.service import QRMIService

SPACING_UM = 20.0  # far enough apart that the atoms barely interact


def inversion(device: Any) -> Sequence:
    """Three atoms on a line around the centre, under a global pulse of area π: each ends in the Rydberg state ("1")."""
    register = Register({f"a{i}": (SPACING_UM * (i - 1), 0.0) for i in range(3)}).with_automatic_layout(device)
    sequence = Sequence(register, device)
    sequence.declare_channel("global", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(1000, math.pi, 0.0, 0.0), "global")
    sequence.measure("ground-rydberg")
    return sequence


def main() -> None:
    [resource] = QRMIService().resources()
    connection = PulserQRMIConnection()  # the job's only Pasqal resource
    explicit = PulserQRMIConnection(resource)
    device = get_device(resource)
    sequence = inversion(device)

    backend = pulser.QPUBackend(sequence, connection)
    results = backend.run([JobParams(runs=300, variables={}), JobParams(runs=100, variables={})], wait=True)
    direct = explicit.submit(sequence, job_params=[JobParams(runs=50, variables={})])
    report: dict[str, Any] = {
        "resource": resource.resource_id(),
        "device": device.name,
        "devices": sorted(connection.fetch_available_devices()),
        "open_batches": connection.supports_open_batch(),
        "batch": [dict(result.final_bitstrings) for result in results],
        "direct_status": direct.get_batch_status().name,
        "direct": dict(direct.results[0].final_bitstrings),
        "logs": list(explicit.get_batch_logs()),
    }
    explicit.cancel_batch_jobs()  # the batch has ended: nothing to cancel
    report["after_cancel"] = direct.get_batch_status().name
    print(json.dumps(report))


if __name__ == "__main__":
    main()
