"""Payloads to and from the bytes the journal stores."""

from __future__ import annotations

import json

from qrmid.backends.payloads import Payload, PayloadKind, PulserSequence, QiskitPrimitive


def dump(payload: Payload) -> bytes:
    if isinstance(payload, QiskitPrimitive):
        return json.dumps({"program_id": payload.program_id, "input": payload.input}).encode()
    return json.dumps({"sequence": payload.sequence, "job_runs": payload.job_runs}).encode()


def load(kind: str, blob: bytes) -> Payload:
    fields = json.loads(blob)
    if PayloadKind(kind) is PayloadKind.QISKIT_PRIMITIVE:
        return QiskitPrimitive(fields["program_id"], fields["input"])
    return PulserSequence(fields["sequence"], int(fields["job_runs"]))
