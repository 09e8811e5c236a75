"""Timing of synchronous calls, for the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(action: Callable[[], object], repeat: int = 1) -> float:
    """Seconds per call of ``action``, the best of three rounds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            action()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best
