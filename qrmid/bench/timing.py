"""Timing of synchronous calls, and the spread of repeated measures, for the benchmarks."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

TICK = 1 / os.sysconf("SC_CLK_TCK")  # seconds per unit of /proc/<pid>/stat's CPU times


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


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system, all threads) process ``pid`` and the processes it started (workers; those that
    ended included) have used so far."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:  # it ended meanwhile
                continue
            parents[int(entry.name)] = int(fields[1])
            used[int(entry.name)] = sum(map(int, fields[11:15])) * TICK  # utime, stime, cutime, cstime: proc(5)
    family, found = {pid}, [pid]
    while found:
        found = [child for child, parent in parents.items() if parent in found and child not in family]
        family.update(found)
    return sum(used.get(member, 0.0) for member in family)
