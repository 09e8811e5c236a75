"""The outline of a Qiskit primitive input: the input with each pub's parameter values reduced to their shape and
type. A hybrid loop sends one circuit with new parameter values each call; whether such an input passes its check
(and its shots) depends on those values only through their shape and type once each is a finite number, so an
input whose outline passed before passes again, without a worker.

Read on the event loop, so only small inputs are looked at, with the standard JSON parser and no circuit decoded:
an input past ``MAX_TEXT``, values other than a list of numbers or a small numeric NumPy array (as
``RuntimeEncoder`` writes it), or a value that is not a finite number give no outline, and the input is checked in
full as usual (with the usual errors).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import zlib
from typing import Any

import numpy as np

MAX_TEXT = 64 << 10  # characters of input looked at
MAX_VALUES_BYTES = 64 << 10  # inflated bytes of one pub's array of parameter values
VALUES_AT = {"sampler": 1, "estimator": 2}  # [circuit, parameter_values, shots], [circuit, observables, ..., precision]
NUMERIC = frozenset("fiu")  # NumPy dtype kinds a parameter value may have


def outline(program_id: str, text: str, *rest: Any) -> tuple[Any, ...] | None:
    """``(program_id, input, *rest)`` with each pub's parameter values replaced by their shape and dtype; None when
    the input is too large to read here, is not a usual primitive input, or has values that are not finite
    numbers."""
    at = VALUES_AT.get(program_id)
    if at is None or len(text) > MAX_TEXT:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    pubs = doc.get("pubs") if isinstance(doc, dict) else None
    if not isinstance(pubs, list):
        return None
    outlined = []
    for pub in pubs:
        if isinstance(pub, list) and len(pub) > at and pub[at] is not None:
            shape = _shape(pub[at])
            if shape is None:
                return None
            pub = [*pub[:at], shape, *pub[at + 1:]]
        outlined.append(pub)
    return (program_id, {**doc, "pubs": outlined}, *rest)


def _shape(values: Any) -> tuple[str, tuple[int, ...], str] | None:
    """How ``values`` are encoded, their shape and their dtype, when every one is a finite number; else None."""
    if isinstance(values, list):
        kind, array = "list", _listed(values)
    elif isinstance(values, dict) and values.keys() == {"__type__", "__value__"} and values["__type__"] == "ndarray":
        kind, array = "ndarray", _encoded(values["__value__"])
    else:
        return None
    if array is None or array.dtype.kind not in NUMERIC or not np.isfinite(array).all():
        return None
    return kind, array.shape, array.dtype.str


def _listed(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """Nested lists of numbers as an array (None when ragged or holding anything else: its dtype says so)."""
    try:
        return np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        return None


def _encoded(value: Any) -> np.ndarray[Any, Any] | None:
    """A ``RuntimeEncoder`` array: zlib-compressed .npy in base64, inflated to at most ``MAX_VALUES_BYTES``."""
    if not isinstance(value, str) or len(value) > MAX_VALUES_BYTES:
        return None
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(base64.b64decode(value, validate=True), MAX_VALUES_BYTES + 1)
        if len(data) > MAX_VALUES_BYTES or not inflater.eof:
            return None
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (binascii.Error, zlib.error, ValueError, EOFError, OSError):
        return None
    return array if isinstance(array, np.ndarray) else None  # not an .npz archive
