"""Circuits read once per process, kept by the hash of their text: a hybrid loop sends the same circuit again and
again (only its parameter values change), so validation and simulator workers parse it once, not every call.

Bounded by the bytes of the texts kept (``CACHE_BYTES``), least recently used dropped first; a text larger than
the whole cache is read every time. Each caller gets its own copy, free to change it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from cachetools import LRUCache
from qiskit import QuantumCircuit

CACHE_BYTES = 16 << 20  # circuit text kept parsed in each process, in all


@dataclass(slots=True)
class Counts:
    """Circuits this process has read, and taken from the cache instead."""

    parsed: int = 0
    reused: int = 0


class Read(NamedTuple):
    """A circuit as ``circuit`` gives it: the caller's own copy, the bytes its text decoded to (a QPY blob's inflated
    size, to charge to the input's budget again on each reuse), and whether it came from the cache."""

    circuit: QuantumCircuit
    decoded: int
    reused: bool


class _Kept(NamedTuple):
    circuit: QuantumCircuit  # never handed out: callers get copies
    decoded: int
    weight: int  # bytes of the text, what the cache is bounded by


counts = Counts()
_cache: LRUCache[bytes, _Kept] = LRUCache(CACHE_BYTES, getsizeof=lambda kept: kept.weight)


def circuit(kind: str, text: str, read: Callable[[str], tuple[QuantumCircuit, int]]) -> Read:
    """The circuit of ``kind`` ("qasm3", "qpy") in ``text``: ``read(text)`` (the circuit and the bytes it decoded
    to) the first time, a copy of that circuit afterwards while the text is kept."""
    data = text.encode()
    key = hashlib.sha256(kind.encode() + b"\0" + data).digest()
    kept = _cache.get(key)
    if kept is not None:
        counts.reused += 1
        return Read(kept.circuit.copy(), kept.decoded, True)
    parsed, decoded = read(text)
    counts.parsed += 1
    if len(data) > CACHE_BYTES:
        return Read(parsed, decoded, False)
    _cache[key] = _Kept(parsed, decoded, len(data))
    return Read(parsed.copy(), decoded, False)
