"""Per-resource dispatch: queued tasks are submitted one at a time, in queue order, whenever one of the
resource's slots is free; each submitted task is then followed to its end on its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from qrmid.backends.base import Adapter, Busy, JobState
from qrmid.core.errors import ResourceExhausted
from qrmid.core.queue import FairQueue
from qrmid.core.tasks import Result, Task, TaskState

log = logging.getLogger(__name__)

_FINAL = {JobState.COMPLETED: TaskState.COMPLETED, JobState.FAILED: TaskState.FAILED,
          JobState.CANCELLED: TaskState.CANCELLED}


class Scheduler:
    """Feeds one backend: at most ``slots`` tasks on it at once, the rest queued.

    Submissions are serial, so the backend sees tasks in queue order; a task the backend refuses (``Busy``:
    lanes full, reserved) goes back to the head of the queue and dispatch backs off, up to ``busy_deadline``.
    """

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
        self._queue = FairQueue()
        self._submitting: Task | None = None
        self._running: dict[Task, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._busy_since: dict[Task, float] = {}
        self._refusals = 0
        self._resume_at = 0.0
        self._flushing: asyncio.Task[None] | None = None

    @property
    def slots(self) -> int:
        return self.adapter.slots

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running) + (self._submitting is not None)

    def enqueue(self, task: Task) -> None:
        """Queue ``task``; ResourceExhausted when the queue is at its limit."""
        self.check_room()
        self._queue.push(task)
        self.wake()

    def check_room(self) -> None:
        if len(self._queue) >= self.queue_limit:
            raise ResourceExhausted(
                f"the queue of resource {self.name!r} is full ({self.queue_limit} tasks waiting); retry later")

    def position(self, task: Task) -> int:
        """1-based place of ``task`` in the queue; 0 when it is not queued."""
        return self._queue.position(task) if task.state is TaskState.QUEUED else 0

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
        elif task is not self._submitting:  # a task being submitted is stopped once its submission returns
            self._queue.remove(task)
            self._busy_since.pop(task, None)
            self.on_done(task)

    async def run(self) -> None:
        """Submit queued tasks as slots free up, forever."""
        while True:
            await self._ready()
            task = self._queue.pop()
            self._submitting = task
            try:
                ref = await self.adapter.submit(task.id, task.payload)
            except Busy as busy:
                self._refused(task, str(busy))
                continue
            except Exception as exc:  # a backend failure fails the task, never the scheduler
                log.warning("task %s on %s: submission failed: %s", task.id, self.name, exc)
                if not task.state.terminal:
                    task.transition(TaskState.FAILED, f"backend error: {exc}")
                self.on_done(task)
                continue
            finally:
                self._submitting = None
            self._busy_since.pop(task, None)
            self._refusals = 0
            self._running[task] = asyncio.create_task(self._follow(task, ref), name=f"qrmid task {task.id}")
            if not self._queue:
                self._flushing = asyncio.create_task(_quietly(self.adapter.flush(), f"flush of {self.name}"))

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

    async def _ready(self) -> None:
        """Return once a task may be submitted: one is queued, dispatch is on, a slot is free, no backoff."""
        while True:
            if self._queue and self.dispatching and len(self._running) < self.slots:
                hold = self._resume_at - time.monotonic()
                if hold <= 0:
                    return
            else:
                hold = None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), hold)

    async def _follow(self, task: Task, ref: str) -> None:
        """Follow a submitted task to its terminal state, fetch its output, then free its slot."""
        try:
            if task.state.terminal:  # stopped while it was being submitted
                raise asyncio.CancelledError
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
            await _quietly(self.adapter.cancel(ref), f"cancel of task {task.id}")
        except Exception as exc:  # a backend failure fails the task, never the scheduler
            log.warning("task %s on %s failed: %s", task.id, self.name, exc, exc_info=exc)
            if not task.state.terminal:
                task.transition(TaskState.FAILED, f"backend error: {exc}")
        finally:
            await _quietly(self.adapter.cleanup(ref), f"cleanup of task {task.id}")
            self._resume_at = 0.0  # our own cleanup freed room on the backend: try again at once
            del self._running[task]
            self.on_done(task)
            self.wake()

    def _refused(self, task: Task, reason: str) -> None:
        """Put a task the backend refused back at the head of the queue and back off, within its deadline."""
        if task.state.terminal:  # stopped while it was being submitted
            self.on_done(task)
            return
        now = time.monotonic()
        since = self._busy_since.setdefault(task, now)
        if now - since >= self.busy_deadline:
            del self._busy_since[task]
            task.transition(TaskState.FAILED, f"the backend refused it for {now - since:.0f} s: {reason}")
            self.on_done(task)
            return
        self._queue.push_front(task)
        self._refusals += 1
        backoff = min(self.max_backoff, 0.25 * 2 ** min(self._refusals, 16))
        self._resume_at = now + backoff * random.uniform(0.5, 1.0)
        log.info("%s refused task %s (%s); retrying in up to %.1f s", self.name, task.id, reason, backoff)


async def _quietly(call: Awaitable[None], what: str) -> None:
    """Await a best-effort backend call to its end, even when the caller is being cancelled; log failures."""
    try:
        await asyncio.shield(call)
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
