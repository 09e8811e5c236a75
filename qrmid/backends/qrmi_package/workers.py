"""Worker threads for QRMI handles: each thread owns one ``QuantumResource``, which no other thread touches.

A QRMI Python handle blocks on every call (it drives its own tokio runtime) and refuses a second caller
("Already borrowed"), so calls run on single-thread executors, each with the handle it built itself. A task stays
on the worker that started it: a handle may keep per-task state (Pasqal Cloud keeps the task kind, IBM's compute
service its session), so the handle that started a task also polls, cancels and reads it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Worker:
    """One thread and the handle it built on its first call."""

    def __init__(self, name: str, factory: Callable[[], Any]) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.factory = factory
        self.handle: Any = None
        self.thread: threading.Thread | None = None
        self.calls = 0  # in flight or waiting
        self.tasks = 0  # tasks pinned here

    def run(self, call: Callable[[Any], T]) -> T:
        """Runs in the worker thread: build the handle if needed, then call with it."""
        if self.handle is None:
            # built lazily rather than by an executor initializer: a failed build would break the executor for good
            self.handle = self.factory()
            self.thread = threading.current_thread()
        return call(self.handle)


class Workers:
    """``count`` workers; calls about a task go to the worker that started it, other calls to the least busy."""

    def __init__(self, name: str, count: int, factory: Callable[[], Any]) -> None:
        self.workers = [Worker(f"qrmi-{name}-{index}", factory) for index in range(count)]
        self._pinned: dict[str, Worker] = {}

    async def call(self, call: Callable[[Any], T], ref: str = "") -> T:
        """``call(handle)`` on the worker of task ``ref`` (any worker when it has none)."""
        worker = self._pinned.get(ref) or min(self.workers, key=lambda w: (w.calls, w.tasks))
        return await self._on(worker, call)

    async def start(self, call: Callable[[Any], str]) -> str:
        """Start a task with ``call(handle)`` on the worker with the fewest tasks; pin the task id it returns."""
        worker = min(self.workers, key=lambda w: (w.tasks, w.calls))
        worker.tasks += 1
        try:
            ref = await self._on(worker, call)
        except BaseException:
            worker.tasks -= 1
            raise
        self._pinned[ref] = worker
        return ref

    def unpin(self, ref: str) -> None:
        """The task is over: its worker may take others."""
        if (worker := self._pinned.pop(ref, None)) is not None:
            worker.tasks -= 1

    def worker_of(self, ref: str) -> Worker | None:
        return self._pinned.get(ref)

    def close(self) -> None:
        """Stop the threads once their current call returns; queued calls are dropped."""
        for worker in self.workers:
            worker.executor.shutdown(wait=False, cancel_futures=True)

    async def _on(self, worker: Worker, call: Callable[[Any], T]) -> T:
        worker.calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(worker.executor, worker.run, call)
        finally:
            worker.calls -= 1
