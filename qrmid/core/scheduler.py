"""Per-resource dispatch: queued tasks are submitted one at a time, in queue order, whenever one of the
resource's slots is free; each submitted task is then followed to its end on its own.

In cluster mode one member dispatches a resource (it *leads*); on the others the scheduler is a standby: it keeps
the same queue from the store's notifications (``mirrored``), so positions and ETAs are answered everywhere, and
takes over with ``lead`` when elected."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from qrmid.backends.base import Adapter, Busy, JobState
from qrmid.backends.payloads import Payload
from qrmid.core.errors import ResourceExhausted, Unavailable
from qrmid.core.gates import Gate, Hold
from qrmid.core.queue import FairQueue, SchedulingPolicy
from qrmid.core.tasks import PayloadUnreadable, Result, Task, TaskState

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
                 on_done: Callable[[Task], None] = lambda task: None, policy: SchedulingPolicy | None = None) -> None:
        self.name = name
        self.adapter = adapter
        self.queue_limit = queue_limit
        self.poll_interval = poll_interval
        self.busy_deadline = busy_deadline
        self.max_backoff = max_backoff
        self.on_done = on_done
        self.dispatching = True
        self.suspended = False
        self.leading = True  # this daemon dispatches the resource (in cluster mode: it was elected to)
        self.term = 0  # how many times it stopped dispatching (cluster mode): a dispatch is a term of leading
        self.published_slots: int | None = None  # the dispatcher's count, on a cluster member without credentials
        self._queue = FairQueue(policy)
        self.gates: list[Gate] = []  # rules holding queued tasks back beyond their place in line
        self.watchers: list[Callable[[], None]] = []  # told of every wake (a pool over this resource)
        self.policy = self._queue.policy
        self.run_seconds: float | None = None  # moving average of how long a task holds a slot
        self._submitting: Task | None = None
        self._ahead = False  # the task being submitted was taken while every slot was busy (Adapter.stages_ahead)
        self._running: dict[Task, asyncio.Task[None]] = {}
        self._elsewhere: dict[Task, None] = {}  # on the backend under another member (standby), in start order
        self._wakeup = asyncio.Event()
        self._busy_since: dict[Task, float] = {}
        self._refusals = 0
        self._resume_at = 0.0

    @property
    def slots(self) -> int:
        return self.adapter.slots if self.published_slots is None else self.published_slots

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Payload bytes of the queued tasks."""
        return self._queue.total_bytes

    def bytes_queued_by(self, owner: str) -> int:
        return self._queue.bytes_queued_by(owner)

    def holds(self, task: Task) -> bool:
        """Whether ``task`` waits in the queue (not taken for submission)."""
        return task in self._queue

    @property
    def running(self) -> int:
        return len(self._running) + len(self._elsewhere) + (self._submitting is not None and not self._ahead)

    @property
    def dispatched(self) -> list[Task]:
        """Tasks on the backend or on their way to it: followed here, under another member, or being submitted (taken
        ahead of a free slot too)."""
        return [*self._running, *self._elsewhere, *([self._submitting] if self._submitting is not None else [])]

    def enqueue(self, task: Task) -> None:
        """Queue ``task``; ResourceExhausted when the queue or its owner is at a limit."""
        self.check_room(task.owner)
        self._queue.push(task)
        self.wake()

    def check_room(self, owner: str | None = None) -> None:
        if len(self._queue) >= self.queue_limit:
            raise ResourceExhausted(
                f"the queue of resource {self.name!r} is full ({self.queue_limit} tasks waiting); retry later")
        limit = self.policy.max_queued_per_owner
        if owner is not None and limit and self._queue.queued_by(owner) >= limit:
            raise ResourceExhausted(f"you have {limit} tasks queued on {self.name!r}, the per-user limit; "
                                    "wait for some to start")

    def estimated_start(self, task: Task) -> float | None:
        """When ``task`` should start (epoch seconds), from its queue position, the slots and the recent run
        time; None when it is not queued, dispatch is off, or no task has finished yet."""
        position = self.position(task)
        if not position or self.run_seconds is None or not self.dispatching:
            return None
        finishes = self.running + position - self.slots  # tasks that must end before a slot is free for it
        backoff = max(self._resume_at - time.monotonic(), 0.0)
        start = time.time() + backoff + max(finishes, 0) * self.run_seconds / self.slots
        held = self.hold(task)
        return start if held is None or held.until is None else max(start, held.until)

    def hold(self, task: Task) -> Hold | None:
        """Why queued ``task`` is held back beyond its place in line, by the first gate that holds it; None when
        none does."""
        now = time.time()
        return next((held for gate in self.gates if (held := gate.hold(task, now)) is not None), None)

    def position(self, task: Task) -> int:
        """1-based place of ``task`` in the queue; 0 when it is not queued."""
        return self._queue.position(task) if task.state is TaskState.QUEUED else 0

    def wake(self) -> None:
        """Re-check whether a task can be dispatched (after a change of slots or state)."""
        self._wakeup.set()
        for watcher in self.watchers:
            watcher()

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
        self.wake()  # a task taken ahead stops waiting for a slot

    async def run(self) -> None:
        """Submit queued tasks as slots free up, forever."""
        while True:
            task = await self._next()
            self._submitting = task
            self._ahead = len(self._running) >= self.slots
            try:
                if not task.eager:  # an eager task runs while its acceptance commits (see Task.eager)
                    await task.events.recorded(task)  # never run a task the journal could not record
                payload = await task.full_payload()
                if self.adapter.remote:  # write-ahead: a restarted daemon must know this job may exist
                    task.events.task_submitting(task)
                    await task.events.durable()
                if self._ahead and not await self._staged(task, payload):
                    continue
                if not self.leading:  # deposed meanwhile (its write-ahead was refused): the task stays queued
                    self._queue.push_front(task)
                    continue
                ref = await self.adapter.submit(task.id, payload)
            except (Busy, Unavailable) as busy:
                self._refused(task, str(busy))
                continue
            except PayloadUnreadable as exc:
                log.error("task %s on %s: %s", task.id, self.name, exc, extra=log_context(task))
                if not task.state.terminal:
                    task.transition(TaskState.FAILED, str(exc))
                self._finished(task)
                continue
            except Exception as exc:  # a backend failure fails the task, never the scheduler
                log.warning("task %s on %s: submission failed: %s", task.id, self.name, exc, extra=log_context(task))
                if not task.state.terminal:
                    task.transition(TaskState.FAILED, f"backend error: {exc}")
                self._finished(task)
                continue
            finally:
                self._submitting, self._ahead = None, False
            self._busy_since.pop(task, None)
            self._refusals = 0
            if not self.leading:  # deposed during the submission: the new dispatcher re-attaches the job
                task.remote_ref = task.remote_ref or ref
                self._elsewhere[task] = None
                continue
            self._running[task] = asyncio.create_task(self._follow(task, ref), name=f"qrmid task {task.id}")
            if not self._queue:
                try:
                    self.adapter.flush()
                except Exception as exc:  # a backend failure never stops the scheduler
                    log.warning("flush of %s failed: %s", self.name, exc)

    def restore_usage(self, task: Task) -> None:
        """Count toward fair share what a task that finished before a restart used."""
        self._queue.restore_usage(task)

    def adopt(self, task: Task, ref: str | None) -> None:
        """Take back a task from before a restart: follow its job by ``ref``, or queue it again when None."""
        if ref is None:
            self._queue.push(task)
            self.wake()
        else:
            self._queue.dispatched(task)  # counts toward its owner's running limit and its account's usage
            self._running[task] = asyncio.create_task(self._follow(task, ref), name=f"qrmid task {task.id}")

    def mirrored(self, task: Task) -> None:
        """Follow a state another member gave ``task`` (standby): it left the queue for the backend, or ended."""
        if task.state is TaskState.QUEUED:
            return
        if task in self._queue:
            self._queue.remove(task)
            self._busy_since.pop(task, None)
            if task.state is TaskState.RUNNING:
                self._queue.dispatched(task)
        if task.state is TaskState.RUNNING:
            self._elsewhere[task] = None
            return
        self._elsewhere.pop(task, None)
        self._finished(task)

    def step_down(self) -> None:
        """Stop dispatching (another member leads now): tasks being followed are left on the backend for the new
        dispatcher, the queue stays as a standby's."""
        self.leading = False
        self.term += 1
        for task, follower in self._running.items():
            if not task.state.terminal:  # an ended one is being released: it sees the step-down itself
                follower.cancel()

    def lead(self, attached: dict[Task, str | None]) -> None:
        """Dispatch from now on (elected): follow each task of ``attached`` on the backend by its reference, or queue
        it first in line when its job does not exist (None)."""
        for task, ref in attached.items():
            self._elsewhere.pop(task, None)
            if task in self._queue:
                self._queue.remove(task)
            if ref is None:
                self._queue.push_front(task)
            else:
                self._queue.dispatched(task)
                self._running[task] = asyncio.create_task(self._follow(task, ref), name=f"qrmid task {task.id}")
        self.leading = True
        self.wake()

    async def submitted(self) -> None:
        """Return once no submission is in flight."""
        while self._submitting is not None:
            await asyncio.sleep(0.05)

    @property
    def elsewhere(self) -> list[Task]:
        """Tasks on the backend under another member, in the order they started."""
        return list(self._elsewhere)

    async def suspend(self, grace: float) -> None:
        """Stop dispatching and give running tasks ``grace`` seconds; then leave queued and running tasks as
        they are, for a restarted daemon to take back from the journal (remote jobs run on meanwhile)."""
        self.dispatching = False
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace)
        self.suspended = True
        for follower in self._running.values():
            follower.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()))

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

    async def _staged(self, task: Task, payload: Payload) -> bool:
        """Stage a task taken while every slot was busy and wait for a free slot; False when it is not to be
        submitted now (stopped meanwhile: it ends; dispatch stopped or a gate holds it now: it goes back to the head of
        the queue)."""
        await self.adapter.stage(task.id, payload)
        while len(self._running) >= self.slots and self.dispatching and self.leading and not task.state.terminal:
            self._wakeup.clear()
            await self._wakeup.wait()
        self._ahead = False
        if not task.state.terminal and self.dispatching and self.leading and self.hold(task) is None:
            return True
        if task.state.terminal or self.leading:
            await _quietly(self.adapter.unstage(task.id), f"unstaging of task {task.id}")
        # else deposed: the new dispatcher takes the task up as after a crash, its staged objects with it (their
        # keys are the task's), and may already be submitting it: they are no longer this member's to remove
        if task.state.terminal:
            self._finished(task)
        else:
            self._queue.push_front(task)
        return False

    async def _next(self) -> Task:
        """Take the next task to submit once one may be: one is queued that every gate admits, dispatch is on, a
        slot is free (or, for an adapter that stages ahead, all are busy but the one taken ahead), no backoff."""
        while True:
            ahead = 1 if self.adapter.stages_ahead else 0
            wait: float | None = None
            if self._queue.ready() and self.dispatching and self.leading and len(self._running) < self.slots + ahead:
                wait = self._resume_at - time.monotonic()
                if wait <= 0:
                    task = self._take()
                    if task is not None:
                        return task
                    wait = self._gates_change()
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()

    def _take(self) -> Task | None:
        """Take the next queued task every gate admits; None when none is."""
        if not self.gates:
            return self._queue.pop()
        now = time.time()
        try:
            return self._queue.pop(lambda task: all(gate.hold(task, now) is None for gate in self.gates))
        except IndexError:
            return None

    def _gates_change(self) -> float | None:
        """Seconds until a gate's verdicts change on their own; None when only a wake changes them."""
        now = time.time()
        times = [at for gate in self.gates if (at := gate.changes_at(now)) is not None]
        return max(min(times) - now, 0.01) if times else None

    async def _follow(self, task: Task, ref: str) -> None:
        """Follow a submitted task to its terminal state, fetch its output, then free its slot."""
        term = self.term
        try:
            if task.state.terminal:  # stopped while it was being submitted
                raise asyncio.CancelledError
            if task.state is TaskState.QUEUED:  # a task adopted after a restart is running already
                task.remote_ref = task.remote_ref or ref  # an adapter may have recorded a finer one already
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
            if not self.suspended and self.leading:
                await _quietly(self.adapter.cancel(ref), f"cancel of task {task.id}")
        except Exception as exc:  # a backend failure fails the task, never the scheduler
            log.warning("task %s on %s failed: %s", task.id, self.name, exc, exc_info=exc, extra=log_context(task))
            if not task.state.terminal:
                task.transition(TaskState.FAILED, f"backend error: {exc}")
        finally:
            if self.suspended and self.leading and not task.state.terminal:  # for a restarted daemon to re-attach
                del self._running[task]
            else:
                await self._release(task, ref, term)

    async def _release(self, task: Task, ref: str, term: int) -> None:
        """Free the slot of a task that ended, followed since ``term``. A remote job is released only once its end
        is journaled (a restart in between finds it again), and only by the dispatch that followed it."""
        recorded = not self.adapter.remote or await _recorded(task)
        if self.term != term or not self.leading:  # deposed meanwhile: the new dispatcher follows the job again
            if self._running.get(task) is not asyncio.current_task():  # a later dispatch here follows it already
                return
            del self._running[task]
            if task.state.terminal:  # its end was recorded: the job is released by whoever leads now
                self._finished(task)
            elif self.leading:  # elected again since, after its end was taken back: follow the job again
                self._running[task] = asyncio.create_task(self._follow(task, ref), name=f"qrmid task {task.id}")
            else:
                self._elsewhere[task] = None
            return
        if recorded:
            await _quietly(self.adapter.cleanup(ref), f"cleanup of task {task.id}")
            if self.adapter.remote:  # only a remote job can outlive a restart unreleased
                task.events.job_released(task)
        self._resume_at = 0.0  # our own cleanup freed room on the backend: try again at once
        del self._running[task]
        self._finished(task)
        self.wake()

    def _finished(self, task: Task) -> None:
        """A dispatched task ended: charge its usage, fold its run time into the average, report it."""
        self._queue.finished(task)
        view = task.view
        if view.started_at is not None and view.ended_at is not None:
            seconds = max(view.ended_at - view.started_at, 0.0)
            self.run_seconds = seconds if self.run_seconds is None else 0.8 * self.run_seconds + 0.2 * seconds
            self._queue.expected_seconds = self.run_seconds
        self.on_done(task)

    def _refused(self, task: Task, reason: str) -> None:
        """Put a task the backend refused back at the head of the queue and back off, within its deadline."""
        if task.state.terminal:  # stopped while it was being submitted
            self._finished(task)
            return
        now = time.monotonic()
        since = self._busy_since.setdefault(task, now)
        if now - since >= self.busy_deadline:
            del self._busy_since[task]
            task.transition(TaskState.FAILED, f"the backend refused it for {now - since:.0f} s: {reason}")
            self._finished(task)
            return
        self._queue.push_front(task)
        self._refusals += 1
        backoff = min(self.max_backoff, 0.25 * 2 ** min(self._refusals, 16))
        self._resume_at = now + backoff * random.uniform(0.5, 1.0)
        log.info("%s refused task %s (%s); retrying in up to %.1f s", self.name, task.id, reason, backoff,
                 extra=log_context(task))


async def _recorded(task: Task, attempts: int = 30) -> bool:
    """Wait until ``task``'s end is recorded for good, retrying each second while the journal cannot be written;
    False when it still cannot be after ``attempts`` tries (the job is then left on the backend)."""
    for _ in range(attempts):
        try:
            await task.events.durable()
            return True
        except Unavailable as exc:
            log.warning("task %s: %s", task.id, exc, extra=log_context(task))
            await asyncio.sleep(1.0)
    return False


def log_context(task: Task) -> dict[str, str]:
    """A task's ids as ``extra`` for a log record, so log lines carry them as separate fields."""
    return {"task_id": task.id, "resource": task.resource, "lease_id": task.lease_id,
            "slurm_job_id": task.slurm_job_id}


async def _quietly(call: Awaitable[None], what: str) -> None:
    """Await a best-effort backend call to its end, even when the caller is being cancelled; log failures."""
    try:
        await asyncio.shield(call)
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
