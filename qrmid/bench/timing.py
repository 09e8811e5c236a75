"""Timing of synchronous calls, and the spread of repeated measures, for the benchmarks."""

from __future__ import annotations

import statistics
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


def spread(values: list[float], unit: str, scale: float = 1.0, digits: int = 0) -> str:
    """``values`` (times ``scale``) as min–median–max with their unit and ``digits`` decimals, e.g. ``412–421–479
    ms``."""
    low, mid, high = (v * scale for v in (min(values), statistics.median(values), max(values)))
    return f"{low:.{digits}f}–{mid:.{digits}f}–{high:.{digits}f} {unit}"
