"""Per-resource queue and dispatch: tasks wait in FIFO order until one of the resource's slots is free."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

from qrmid.backends.base import Adapter, Busy, JobState
from qrmid.core.errors import ResourceExhausted
from qrmid.core.tasks import Result, Task, TaskState

log = logging.getLogger(__name__)

_FINAL = {JobState.COMPLETED: TaskState.COMPLETED, JobState.FAILED: TaskState.FAILED,
          JobState.CANCELLED: TaskState.CANCELLED}


class Scheduler:
    """Feeds one backend: at most ``slots`` tasks on it at once, the rest queued in arrival order."""

    def __init__(self, name: str, adapter: Adapter, *, queue_limit: int, poll_interval: float,
                 busy_deadline: float = 3600.0, max_backoff: float = 30.0,
                 on_done: Callable[[Task], None] = lambda task: None) -> None:
        self.name = name
        self.adapter = adapter
        self.queue_limit = queue_limit
        self.poll_interval = poll_interval
        self.busy_deadline = busy_deadline
        self.max_backoff = max_backoff
        self.on_done = on_done
        self.dispatching = True
        self._queue: deque[Task] = deque()
        self._running: dict[Task, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._busy_since: dict[Task, float] = {}
        self._refusals = 0
        self._resume_at = 0.0
        self._submitting = 0
        self._flushing: asyncio.Task[None] | None = None

    @property
    def slots(self) -> int:
        return self.adapter.slots

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    def enqueue(self, task: Task) -> None:
        """Queue ``task``; ResourceExhausted when the queue is at its limit."""
        self.check_room()
        self._queue.append(task)
        self.wake()

    def check_room(self) -> None:
        if len(self._queue) >= self.queue_limit:
            raise ResourceExhausted(
                f"the queue of resource {self.name!r} is full ({self.queue_limit} tasks waiting); retry later")

    def position(self, task: Task) -> int:
        """1-based place of ``task`` in the queue; 0 when it is not queued."""
        if task.state is not TaskState.QUEUED:
            return 0
        for index, queued in enumerate(self._queue, 1):
            if queued is task:
                return index
        return 0

    def wake(self) -> None:
        """Re-check whether a task can be dispatched (after a change of slots or state)."""
        self._wakeup.set()

    def stop(self, task: Task, reason: str) -> None:
        """Cancel ``task`` wherever it is: drop it from the queue or stop its job on the backend."""
        if task.state.terminal:
            return
        task.transition(TaskState.CANCELLED, reason)
        if task in self._running:
            self._running[task].cancel()
        else:
            self._queue.remove(task)
            self._busy_since.pop(task, None)
            self.on_done(task)

    async def run(self) -> None:
        """Dispatch queued tasks as slots free up, forever."""
        while True:
            while not (self._queue and self.dispatching and len(self._running) < self.slots):
                self._wakeup.clear()
                await self._wakeup.wait()
            if (hold := self._resume_at - time.monotonic()) > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), hold)
                continue
            task = self._queue.popleft()
            self._running[task] = asyncio.create_task(self._drive(task), name=f"qrmid task {task.id}")

    async def drain(self, grace: float, reason: str) -> None:
        """Stop dispatching, cancel queued tasks, give running ones ``grace`` seconds, then cancel them."""
        self.dispatching = False
        for task in list(self._queue):
            self.stop(task, reason)
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace)
        for task in list(self._running):
            self.stop(task, reason)
        if self._running:
            await asyncio.wait(list(self._running.values()))

    async def _drive(self, task: Task) -> None:
        """Run one task on the backend from submission to its terminal state, then free its slot."""
        ref: str | None = None
        try:
            self._submitting += 1
            try:
                ref = await self.adapter.submit(task.id, task.payload)
            except Busy as busy:
                self._refused(task, str(busy))
                return
            finally:
                self._submitting -= 1
                if not self._submitting and not self._queue:
                    self._flushing = asyncio.create_task(_quietly(self.adapter.flush(), f"flush of {self.name}"))
            self._admitted(task)
            task.remote_ref = ref
            task.transition(TaskState.RUNNING)
            status = await self.adapter.wait(ref, self.poll_interval)
            while not status.state.terminal:
                status = await self.adapter.wait(ref, self.poll_interval)
            if status.state is JobState.COMPLETED:
                output = await self.adapter.output(ref)
                task.result = Result(output.data, output.content_type)
                task.logs = output.logs
            task.transition(_FINAL[status.state], status.reason)
        except asyncio.CancelledError:
            if ref is not None:
                await _quietly(self.adapter.cancel(ref), f"cancel of task {task.id}")
        except Exception as exc:  # a backend failure fails the task, never the scheduler
            log.warning("task %s on %s failed: %s", task.id, self.name, exc, exc_info=exc)
            if not task.state.terminal:
                task.transition(TaskState.FAILED, f"backend error: {exc}")
        finally:
            if ref is not None:
                await _quietly(self.adapter.cleanup(ref), f"cleanup of task {task.id}")
                self._resume_at = 0.0  # our own cleanup freed room on the backend: try again at once
            del self._running[task]
            if task.state.terminal:
                self.on_done(task)
            self.wake()

    def _refused(self, task: Task, reason: str) -> None:
        """Put a task the backend refused back at the head of the queue and back off, within its deadline."""
        if task.state.terminal:
            return
        now = time.monotonic()
        since = self._busy_since.setdefault(task, now)
        if now - since >= self.busy_deadline:
            del self._busy_since[task]
            task.transition(TaskState.FAILED, f"the backend refused it for {now - since:.0f} s: {reason}")
            return
        self._queue.appendleft(task)
        self._refusals += 1
        backoff = min(self.max_backoff, 0.5 * 2 ** min(self._refusals, 16))
        self._resume_at = now + backoff * random.uniform(0.5, 1.0)
        log.info("%s refused task %s (%s); retrying in up to %.1f s", self.name, task.id, reason, backoff)

    def _admitted(self, task: Task) -> None:
        self._busy_since.pop(task, None)
        self._refusals = 0


async def _quietly(call: Awaitable[None], what: str) -> None:
    """Await a best-effort backend call to its end, even when the caller is being cancelled; log failures."""
    try:
        await asyncio.shield(call)
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
