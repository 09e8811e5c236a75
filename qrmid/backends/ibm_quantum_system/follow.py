"""Following a backend's running jobs: each is looked at when it is expected to end, all due jobs in one round.

The service has no push: a lane stays held until the client sees its job end, reads the results and DELETEs it.
Polling every job at a fixed interval either holds lanes (slow polls) or floods the service (fast ones). Instead:

- the expected run time is the moving average of the run times of the backend's completed jobs (the service's
  own ``created_time`` to ``end_time``); until one completed, jobs are looked at every ``interval``;
- a job is looked at halfway to its expected end while more than two intervals remain (an early failure frees its
  lane soon), at its expected end, and then at short steps growing by half from 0.5 % of the run time (at least
  10 ms) up to ``interval``: a job that ends a little later than expected is seen a little later, not a fixed
  share of its run time later;
- as the first look at or past a job's expected end goes out, ``reaching_end`` is told, so that the job's output
  can be read meanwhile;
- each round looks at every due job in one call of ``look``: one ``GET /v1/jobs`` on a server without
  ``GET /v1/jobs/{id}``, which then updates every followed job at once;
- rounds do not wait for one another: a slow answer about some jobs holds no other job's look (a job is in one
  round at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ENDED = frozenset({"Completed", "Failed", "Cancelled"})  # any other status, unknown ones included, still runs
FINEST = 0.01  # seconds: the shortest step between looks at a job past its expected end
COALESCE = 0.005  # seconds: jobs due this close together are looked at in the same round

# Looks at the given jobs; answers {job id: the job, or None when the service has no such job} for those and, when
# one answer covers them (a job list), for any other job it saw.
Look = Callable[[list[str]], Awaitable[dict[str, dict[str, Any] | None]]]


@dataclass(eq=False)
class Followed:
    """One job being followed: when it started, when to look next, and its end once seen."""

    started: float
    due: float
    looks_past_end: int = 0
    end_told: bool = False  # reaching_end was told of the job
    looking: bool = False  # a round is looking at the job
    ended: asyncio.Future[dict[str, Any]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Follower:
    """Follows one backend's jobs until each ends (see the module's docstring)."""

    def __init__(self, look: Look, interval: float, reaching_end: Callable[[str], None] = lambda job_id: None) -> None:
        self.look = look
        self.interval = interval
        self.reaching_end = reaching_end
        self.expected: float | None = None  # moving average of completed jobs' run seconds
        self._jobs: dict[str, Followed] = {}
        self._changed = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._rounds: set[asyncio.Task[None]] = set()

    def follow(self, job_id: str, started: float | None = None) -> Followed:
        """Start following ``job_id`` (posted at ``started``, monotonic seconds; default now); idempotent."""
        followed = self._jobs.get(job_id)
        if followed is None:
            now = time.monotonic()
            followed = self._jobs[job_id] = Followed(now if started is None else started, 0.0)
            followed.due = self._next_look(followed, now)
            followed.ended.add_done_callback(_retrieve)
            self._changed.set()
            if self._loop is None or self._loop.done():
                self._loop = asyncio.create_task(self._run(), name="qrmid IBM job follower")
        return followed

    def forget(self, job_id: str) -> None:
        """Stop following ``job_id`` (released, or no longer this daemon's to follow)."""
        followed = self._jobs.pop(job_id, None)
        if followed is not None and not followed.ended.done():
            followed.ended.cancel()
        self._changed.set()

    async def ended(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The job once it ended, or None when it still runs after ``timeout`` seconds."""
        self.interval = timeout  # the scheduler's poll interval, which a reload may change
        followed = self.follow(job_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await asyncio.shield(followed.ended)
        return None

    async def close(self) -> None:
        for task in [*filter(None, [self._loop]), *self._rounds]:
            task.cancel()
        await asyncio.gather(*filter(None, [self._loop]), *self._rounds, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            pending = {job_id: f for job_id, f in self._jobs.items() if not (f.ended.done() or f.looking)}
            if not pending:
                if not self._jobs:
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            now = time.monotonic()
            wake = min(f.due for f in pending.values())
            if wake > now:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wake - now):
                        await self._changed.wait()
                continue
            due = [job_id for job_id, f in pending.items() if f.due <= now + COALESCE]
            for job_id in due:
                pending[job_id].looking = True
                if (self.expected is not None and not pending[job_id].end_told
                        and now >= pending[job_id].started + self.expected - COALESCE):
                    pending[job_id].end_told = True
                    self.reaching_end(job_id)
            looking = asyncio.create_task(self._round(due), name="qrmid IBM job look")
            self._rounds.add(looking)
            looking.add_done_callback(self._rounds.discard)

    async def _round(self, due: list[str]) -> None:
        """Look at the due jobs; settle the ones that ended and schedule the next look at the others."""
        try:
            await self._settle(due)
        finally:
            for job_id in due:
                followed = self._jobs.get(job_id)
                if followed is not None:
                    followed.looking = False
            self._changed.set()

    async def _settle(self, due: list[str]) -> None:
        try:
            seen = await self.look(due)
        except Exception as exc:  # the look kept failing past its retries: the due jobs' waiters hear of it
            for job_id in due:
                followed = self._jobs.get(job_id)
                if followed is not None and not followed.ended.done():
                    followed.ended.set_exception(exc)
            return
        now = time.monotonic()
        for job_id, job in seen.items():
            followed = self._jobs.get(job_id)
            if followed is None or followed.ended.done():
                continue
            if job is None:
                followed.ended.set_exception(RuntimeError(f"job {job_id} is no longer stored on the backend"))
            elif job.get("status") in ENDED:
                self._learn(job, followed, now)
                followed.ended.set_result(job)
            else:
                followed.due = self._next_look(followed, now)
        for job_id in due:  # a job the look did not answer for is looked at again after an interval
            followed = self._jobs.get(job_id)
            if followed is not None and job_id not in seen and not followed.ended.done():
                followed.due = now + self.interval

    def _next_look(self, followed: Followed, now: float) -> float:
        if self.expected is None:
            return now + self.interval
        end = followed.started + self.expected
        if end - now > 2 * self.interval:
            return now + (end - now) / 2
        if now < end:
            return end
        step = max(FINEST, self.expected * 0.005) * 1.5 ** followed.looks_past_end
        followed.looks_past_end += 1
        return now + min(step, self.interval)

    def _learn(self, job: dict[str, Any], followed: Followed, now: float) -> None:
        """Fold a completed job's run time into the expected one (the service's own times when it gives them), half
        and half, so that the expectation follows a change of workload within a few jobs."""
        if job.get("status") != "Completed":
            return
        seconds = _run_seconds(job)
        if seconds is None:
            seconds = now - followed.started
        self.expected = seconds if self.expected is None else (self.expected + seconds) / 2


def _run_seconds(job: dict[str, Any]) -> float | None:
    try:
        seconds = (datetime.fromisoformat(job["end_time"]) - datetime.fromisoformat(job["created_time"]))
    except (KeyError, TypeError, ValueError):
        return None
    return max(seconds.total_seconds(), 0.0)


def _retrieve(ended: asyncio.Future[dict[str, Any]]) -> None:
    """Mark a failure as seen: a waiter that was stopped meanwhile never reads it."""
    if not ended.cancelled():
        ended.exception()
