"""Per-resource queue and dispatch: tasks wait in FIFO order until one of the resource's slots is free."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from qrmid.backends.base import Adapter, JobState
from qrmid.core.errors import ResourceExhausted
from qrmid.core.tasks import Result, Task, TaskState

log = logging.getLogger(__name__)

_FINAL = {JobState.COMPLETED: TaskState.COMPLETED, JobState.FAILED: TaskState.FAILED,
          JobState.CANCELLED: TaskState.CANCELLED}


class Scheduler:
    """Feeds one backend: at most ``slots`` tasks on it at once, the rest queued in arrival order."""

    def __init__(self, name: str, adapter: Adapter, *, queue_limit: int, poll_interval: float,
                 max_slots: int = 0, on_done: Callable[[Task], None] = lambda task: None) -> None:
        self.name = name
        self.adapter = adapter
        self.queue_limit = queue_limit
        self.poll_interval = poll_interval
        self.max_slots = max_slots
        self.on_done = on_done
        self.dispatching = True
        self._queue: deque[Task] = deque()
        self._running: dict[Task, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()

    @property
    def slots(self) -> int:
        slots = self.adapter.slots
        return min(slots, self.max_slots) if self.max_slots else slots

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
            self.on_done(task)

    async def run(self) -> None:
        """Dispatch queued tasks as slots free up, forever."""
        while True:
            while not (self._queue and self.dispatching and len(self._running) < self.slots):
                self._wakeup.clear()
                await self._wakeup.wait()
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
            ref = await self.adapter.submit(task.id, task.payload)
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
            del self._running[task]
            self.on_done(task)
            self.wake()


async def _quietly(call: Awaitable[None], what: str) -> None:
    """Await a best-effort backend call to its end, even when the caller is being cancelled; log failures."""
    try:
        await asyncio.shield(call)
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
