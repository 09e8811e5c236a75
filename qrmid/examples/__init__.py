"""Example task inputs in QRMI's task_runner schema, used by ``qrmid demo`` and the README."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> dict[str, Any]:
    """The example ``name`` (``bell``, ``estimator`` or ``pulser``)."""
    doc: dict[str, Any] = json.loads((HERE / f"{name}.json").read_text())
    return doc
