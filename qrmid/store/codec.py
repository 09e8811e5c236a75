"""Payloads to and from the bytes the journal stores."""

from __future__ import annotations

import json
from typing import Any

from qrmid.backends.payloads import Payload, PayloadKind, PulserSequence, QiskitPrimitive


class CorruptPayload(ValueError):
    """Stored bytes that are not a payload of their kind; the message says what is wrong."""


def dump(payload: Payload) -> bytes:
    if isinstance(payload, QiskitPrimitive):
        return json.dumps({"program_id": payload.program_id, "input": payload.input}).encode()
    return json.dumps({"sequence": payload.sequence, "job_runs": payload.job_runs}).encode()


def load(kind: str, blob: bytes | str) -> Payload:
    """The payload ``dump`` stored as ``blob``; CorruptPayload when the kind or the bytes are not one."""
    try:
        known = PayloadKind(kind)
    except ValueError:
        raise CorruptPayload(f"unknown payload kind {kind!r}") from None
    try:
        fields = json.loads(blob)
    except (ValueError, TypeError) as exc:  # not JSON, not UTF-8, not bytes
        raise CorruptPayload(f"the payload is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise CorruptPayload(f"the payload is JSON {type(fields).__name__}, not an object")
    if known is PayloadKind.QISKIT_PRIMITIVE:
        return QiskitPrimitive(_field(fields, "program_id", str), _field(fields, "input", str))
    runs = _field(fields, "job_runs", int)
    if isinstance(runs, bool) or runs < 0:
        raise CorruptPayload(f"the payload's job_runs is {runs!r}, not a count")
    return PulserSequence(_field(fields, "sequence", str), runs)


def _field(fields: dict[str, Any], name: str, kind: type) -> Any:
    value = fields.get(name)
    if not isinstance(value, kind):
        raise CorruptPayload(f"the payload's {name} is {type(value).__name__}, not {kind.__name__}")
    return value
