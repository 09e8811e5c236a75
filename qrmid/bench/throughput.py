"""Throughput of concurrent callers, for the benchmarks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def counted(calls: list[Callable[[], Awaitable[object]]], seconds: float) -> tuple[int, float]:
    """How many calls completed, and in how many seconds, when each of ``calls`` is repeated back to back by its own
    caller for ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(call: Callable[[], Awaitable[object]]) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(call) for call in calls))
    return done, time.perf_counter() - started


async def throughput(calls: list[Callable[[], Awaitable[object]]], seconds: float) -> float:
    """Calls per second when each of ``calls`` is repeated back to back by its own caller for ``seconds``."""
    done, elapsed = await counted(calls, seconds)
    return done / elapsed
