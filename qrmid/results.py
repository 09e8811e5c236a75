"""Readable summaries of task results for people: counts per register, expectation values."""

from __future__ import annotations

import json
from typing import Any


def summarize(data: bytes) -> Any:
    """Qiskit results (IBM's encoding) as counts or expectation values per pub; other JSON as it is."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"bytes": len(data)}
    if not (isinstance(doc, dict) and doc.get("__type__") == "PrimitiveResult"):
        return doc
    from qiskit_ibm_runtime.json import RuntimeDecoder

    result = json.loads(data, cls=RuntimeDecoder)
    return {"pubs": [_pub(pub) for pub in result]}


def _pub(pub: Any) -> dict[str, Any]:
    fields = {name: getattr(pub.data, name) for name in pub.data}
    if "evs" in fields:
        return {"evs": fields["evs"].tolist(), "stds": fields["stds"].tolist()}
    return {name: dict(sorted(value.get_counts().items())) for name, value in fields.items()
            if hasattr(value, "get_counts")}
