"""Adapters whose jobs run in a pool of worker processes (local simulators), off the event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pebble import ProcessPool

from qrmid.backends.base import Adapter, BackendState, BackendStatus, JobState, JobStatus, Output
from qrmid.backends.payloads import Payload


class PoolAdapter(Adapter):
    """Runs each job as one call in a worker process; ``slots`` workers, one job each.

    A cancelled running job has its worker process stopped (and replaced), so its slot frees at once.
    """

    def __init__(self, workers: int, max_run_seconds: float, warm_up: Callable[[], None]) -> None:
        self.workers = workers
        self.max_run_seconds = max_run_seconds
        self._warm_up = warm_up
        self._pool: ProcessPool | None = None
        self._jobs: dict[str, asyncio.Future[Any]] = {}

    @property
    def slots(self) -> int:
        return self.workers

    async def start(self) -> None:
        self._pool = ProcessPool(max_workers=self.workers, context=multiprocessing.get_context("spawn"),
                                 initializer=self._warm_up)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            await asyncio.to_thread(self._pool.join)

    async def status(self) -> BackendStatus:
        if self._pool is None or not self._pool.active:
            return BackendStatus(BackendState.OFFLINE, "worker pool is not running")
        return BackendStatus(BackendState.ONLINE)

    @abstractmethod
    def job(self, payload: Payload) -> tuple[Callable[..., tuple[bytes, str]], tuple[Any, ...]]:
        """The worker function and its arguments for ``payload``; it returns (result JSON, logs)."""

    async def submit(self, task_id: str, payload: Payload) -> str:
        assert self._pool is not None, "start() first"
        function, args = self.job(payload)
        future = self._pool.schedule(function, args=args, timeout=self.max_run_seconds or None)
        self._jobs[task_id] = asyncio.wrap_future(future)
        return task_id

    async def poll(self, ref: str) -> JobStatus:
        future = self._jobs[ref]
        if not future.done():
            return JobStatus(JobState.RUNNING)
        if future.cancelled():
            return JobStatus(JobState.CANCELLED, "cancelled")
        error = future.exception()
        if isinstance(error, FutureTimeout):
            return JobStatus(JobState.FAILED, f"simulation ran past max_run_seconds ({self.max_run_seconds:g} s)")
        if isinstance(error, CancelledError):
            return JobStatus(JobState.CANCELLED, "cancelled")
        if error is not None:
            return JobStatus(JobState.FAILED, f"simulation failed: {type(error).__name__}: {error}")
        return JobStatus(JobState.COMPLETED)

    async def wait(self, ref: str, timeout: float) -> JobStatus:
        await asyncio.wait([self._jobs[ref]], timeout=timeout)
        return await self.poll(ref)

    async def cancel(self, ref: str) -> None:
        self._jobs[ref].cancel()

    async def output(self, ref: str) -> Output:
        data, logs = self._jobs[ref].result()
        return Output(data=data, logs=logs)

    async def cleanup(self, ref: str) -> None:
        self._jobs.pop(ref, None)
