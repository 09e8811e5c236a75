"""Open-batch packing: a resource's tasks become the jobs of shared open batches on its device type.

A submitted task is held here and placed in the background, so the scheduler's serial submissions cost no round
trip each: the first waiting tasks open a batch (``POST /api/v1/batches`` with ``open: true``), and the tasks that
arrive while one request is on the wire are appended together by the next (``POST /api/v2/batches/{id}/jobs``).
A batch is completed (``PATCH /api/v2/batches/{id}/complete``) when

- its window has passed since it was opened;
- it holds the most jobs, or runs, a batch may hold;
- (``close_when_idle``) the resource has nothing more to give it (queue empty, nothing waiting here) and every job
  of the batch has finished, so the batch would only hold the device idle. Completing at the first empty queue
  instead would close a batch after nearly every task, as tasks reach the queue one by one.

One poll of a batch (its status counts, and the list of its finished jobs only when those counts moved) settles
every task of that batch. A batch is polled every ``poll_interval``, or sooner when its running and pending jobs
are expected to end sooner (their count times the moving average of the run times the service reports), but never
more often than ``min_poll_interval``, and less often each time a look finds no job ended: the last tasks of a batch
are seen to end about one job's run time after they do, not up to a poll interval later, for a few requests more.

A write is never sent twice: before retrying one, the packer looks for the effect of the earlier attempt (the
batch's unique tag, or new job ids in the batch).

Across a restart of the daemon: before each write that creates jobs, the packer has the journal record where
they will land (the new batch's tag, or the open batch and its job count), and once they exist, their ids. A
restarted packer takes back placed jobs (``adopt``) and finds the jobs of an interrupted write (``find``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qrmid.backends.base import JobState, JobStatus
from qrmid.backends.pasqal_cloud.api import ApiError, PasqalApi

log = logging.getLogger(__name__)

ENDED = ("DONE", "ERROR", "CANCELED")
RUN_TIME_WEIGHT = 0.2  # weight of each newly finished job in the moving average of run times
MAX_BACKOFF = 6  # a look that finds no job ended doubles the next wait, up to 2**MAX_BACKOFF times the expected
BATCH_ENDED = frozenset({"DONE", "ERROR", "CANCELED", "TIMED_OUT"})
STOP_SECONDS = 5.0  # at shutdown, how long completing the open batches may take


def job_status(status: str, errors: list[str] | None, batch_status: str, batch_id: str) -> JobStatus:
    """A job's state for qrmid from the job's own status and, while it is unfinished, its batch's."""
    if status == "DONE":
        return JobStatus(JobState.COMPLETED)
    if status == "ERROR":
        return JobStatus(JobState.FAILED, f"the job failed on Pasqal Cloud: {'; '.join(errors or []) or 'no reason'}")
    if status == "CANCELED":
        return JobStatus(JobState.CANCELLED, "the job was cancelled on Pasqal Cloud")
    if batch_status == "TIMED_OUT":
        return JobStatus(JobState.FAILED, f"batch {batch_id} timed out on Pasqal Cloud (TIMED_OUT) before the job ran")
    if batch_status == "CANCELED":
        return JobStatus(JobState.CANCELLED, f"batch {batch_id} was cancelled on Pasqal Cloud")
    if batch_status in BATCH_ENDED:
        return JobStatus(JobState.FAILED, f"batch {batch_id} ended {batch_status} before the job ran")
    return JobStatus(JobState.RUNNING)  # PENDING, RUNNING, PAUSED and any newer status


@dataclass(frozen=True)
class Limits:
    """When a batch stops taking jobs."""

    window: float
    max_jobs: int
    max_runs: int  # 0: no limit
    close_when_idle: bool


@dataclass(eq=False)
class Job:
    """One task's job: waiting here, then placed in a batch (``id`` set); ``status`` is set once, when terminal."""

    ref: str
    sequence: str
    runs: int
    id: str = ""
    batch: Batch | None = None
    stopped: bool = False
    status: JobStatus | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def settle(self, status: JobStatus) -> None:
        if self.status is None and status.state.terminal:
            self.status = status
            self.settled.set()


@dataclass(eq=False)
class Batch:
    """A batch this packer made, and the jobs in it whose tasks are still followed."""

    id: str
    open: bool
    known: set[str] = field(default_factory=set)  # every job id the batch holds
    runs: int = 0
    jobs: dict[str, Job] = field(default_factory=dict)
    drained: bool = False  # last poll: every job of the batch finished
    ended_seen: int = -1  # finished-job count behind the last listing of finished jobs
    ended_polled: int = -1  # finished-job count at the last poll
    needs_complete: bool = False
    completing: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    due: float = 0.0  # event-loop time of the next poll
    fruitless: int = 0  # polls in a row that found no job ended

    def unsettled(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.status is None]


class Packer:
    """Packs the jobs of one device type and project into open batches and follows them."""

    def __init__(self, api: PasqalApi, device_type: str, project_id: str, limits: Limits,
                 poll_interval: float, record: Callable[[dict[str, str]], Awaitable[None]] | None = None,
                 redact: Callable[[str], str] = str, min_poll_interval: float | None = None) -> None:
        self.api = api
        self.redact = redact  # masks secrets in what it logs
        self.record = record or _unrecorded  # journals {task ref: placement}; returns once durable
        self.device_type = device_type
        self.project_id = project_id
        self.limits = limits
        self.poll_interval = poll_interval
        self.min_poll_interval = min(min_poll_interval or poll_interval, poll_interval)
        self.run_time: float | None = None  # moving average of the jobs' run times, seconds
        self.jobs: dict[str, Job] = {}  # by task reference
        self._batches: dict[str, Batch] = {}
        self._current: Batch | None = None
        self._waiting: deque[Job] = deque()
        self._lock = asyncio.Lock()  # held while the open batch changes: opening, appending, completing
        self._pump: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._idle = False
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever(), name=f"pasqal {self.device_type} poller")

    async def stop(self) -> None:
        """Stop placing and polling, and complete every batch still open, within STOP_SECONDS."""
        running = [task for task in (self._poller, self._pump, *self._background) if task is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        pending = [batch for batch in self._batches.values() if batch.open or batch.needs_complete]
        self._current = None
        for batch in pending:
            batch.open = False
            if batch.timer is not None:
                batch.timer.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_SECONDS):
                await asyncio.gather(*(self._complete(batch) for batch in pending))

    def add(self, ref: str, sequence: str, runs: int) -> Job:
        """Take a task's job; it goes into the open batch (or a new one) in the background."""
        job = Job(ref, sequence, runs)
        self.jobs[ref] = job
        self._waiting.append(job)
        self._idle = False
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._drain(), name=f"pasqal {self.device_type} packer")
        return job

    def idle(self) -> None:
        """The resource has nothing queued: complete the open batch once it has nothing left to run."""
        self._idle = True
        if self.limits.close_when_idle and self._current is not None and self._current.drained:
            self._close_soon(self._current, only_if_idle=True)

    async def cancel(self, ref: str) -> None:
        """Stop a task's job: drop it while it waits here, or cancel it on the service (only that job)."""
        job = self.jobs.get(ref)
        if job is None or job.status is not None:
            return
        job.stopped = True
        if job in self._waiting:
            self._waiting.remove(job)
        if not job.id:  # still waiting, or being placed: the placement cancels it
            job.settle(JobStatus(JobState.CANCELLED, "stopped before it reached Pasqal Cloud"))
            return
        try:
            await self.api.call("PATCH", f"/api/v2/jobs/{job.id}/cancel")
        except ApiError as exc:
            if exc.status not in (400, 404, 409):  # already terminal, or gone
                raise

    def forget(self, ref: str) -> None:
        """Stop following a task's job once the task is over."""
        job = self.jobs.pop(ref, None)
        if job is None:
            return
        if job in self._waiting:
            self._waiting.remove(job)
        if job.batch is not None:
            job.batch.jobs.pop(job.id, None)
            self._drop_if_done(job.batch)

    # -- placing jobs ------------------------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            async with self._lock:
                if not self._waiting:
                    return
                group = self._fitting(self._current)
                if not group:  # the open batch is full for the next job
                    assert self._current is not None
                    self._retire(self._current)
                    continue
                await self._place(group)

    def _fitting(self, batch: Batch | None) -> list[Job]:
        """The waiting jobs, in order, that fit in ``batch`` (a new batch takes at least one)."""
        room = self.limits.max_jobs - (len(batch.known) if batch else 0)
        runs_room = self.limits.max_runs - (batch.runs if batch else 0) if self.limits.max_runs else None
        group: list[Job] = []
        for job in self._waiting:
            fits = runs_room is None or job.runs <= runs_room or (batch is None and not group)
            if len(group) >= room or not fits:
                break
            group.append(job)
            if runs_room is not None:
                runs_room -= job.runs
        for job in group:
            self._waiting.remove(job)
        return group

    async def _place(self, group: list[Job]) -> None:
        """Open a batch with ``group`` or append it to the open one; settle the jobs that could not be placed."""
        try:
            batch, ids = await self._submit(group)
        except ApiError as exc:
            if len(group) == 1:
                group[0].settle(JobStatus(JobState.FAILED, f"Pasqal Cloud refused the job: {exc}"))
                return
            for job in group:  # one refused job must not fail the others: place them one by one
                await self._place([job])
            return
        except Exception as exc:
            for job in group:
                job.settle(JobStatus(JobState.FAILED, f"the job could not be submitted: {exc}"))
            return
        self._spawn(self._note({job.ref: json.dumps({"batch": batch.id, "job": job_id})
                                for job, job_id in zip(group, ids, strict=True)}))
        for job, job_id in zip(group, ids, strict=True):
            job.id, job.batch, job.sequence = job_id, batch, ""
            batch.known.add(job_id)
            batch.runs += job.runs
            if job.stopped:  # its task was stopped while the job was being placed
                self._spawn(self._cancel_quietly(job_id))
            elif job.ref in self.jobs:
                batch.jobs[job_id] = job
        batch.drained = False
        if batch.open and (len(batch.known) >= self.limits.max_jobs or self._runs_full(batch.runs)):
            self._retire(batch)

    async def _submit(self, group: list[Job]) -> tuple[Batch, list[str]]:
        batch = self._current
        if batch is None:
            return await self._open(group)
        try:
            return batch, await self._append(batch, group)
        except ApiError:
            if (await self.api.call("GET", f"/api/v2/batches/{batch.id}")).get("open", True):
                raise
        except Exception:
            self._retire(batch)  # its state is unknown: complete it once the service answers again
            raise
        log.info("batch %s on %s was closed by the service; opening a new one", batch.id, self.device_type)
        self._retire(batch, complete=False)
        return await self._open(group)

    async def _open(self, group: list[Job]) -> tuple[Batch, list[str]]:
        tag = f"qrmid-{uuid.uuid4()}"
        full = len(group) >= self.limits.max_jobs or self._runs_full(sum(job.runs for job in group))
        jobs: list[dict[str, Any]] = [{"runs": group[0].runs}]  # the first job runs the batch's own sequence
        jobs += [{"runs": job.runs, "sequence": job.sequence} for job in group[1:]]
        body = {"sequence_builder": group[0].sequence, "jobs": jobs, "device_type": self.device_type,
                "project_id": self.project_id, "open": not full, "tags": [tag]}

        async def landed() -> dict[str, Any] | None:
            found = await self.api.once("/api/v1/batches", {"tag": tag, "project_id": self.project_id})
            return {"id": found[0]["id"], "jobs": [{"id": i} for i in found[0]["job_ids"]]} if found else None

        await self.record({job.ref: json.dumps({"placing": "new", "tag": tag, "index": index})
                           for index, job in enumerate(group)})
        data = await self.api.call("POST", "/api/v1/batches", body=body, compress=True, landed=landed)
        batch = Batch(str(data["id"]), open=not full, due=asyncio.get_running_loop().time() + self.poll_interval)
        self._batches[batch.id] = batch
        if batch.open:
            self._current = batch
            batch.timer = asyncio.get_running_loop().call_later(self.limits.window, self._close_soon, batch, False)
        log.info("opened batch %s on %s with %d job(s)", batch.id, self.device_type, len(group))
        return batch, _ids(data, set(), len(group))

    async def _append(self, batch: Batch, group: list[Job]) -> list[str]:
        body = [{"runs": job.runs, "sequence": job.sequence} for job in group]

        async def landed() -> dict[str, Any] | None:
            now = await self.api.once(f"/api/v2/batches/{batch.id}")
            held = [{"id": i} for i in now.get("job_ids", [])]
            return {"jobs": held} if any(job["id"] not in batch.known for job in held) else None

        await self.record({job.ref: json.dumps({"placing": "append", "batch": batch.id, "after": len(batch.known),
                                                "index": index}) for index, job in enumerate(group)})
        data = await self.api.call("POST", f"/api/v2/batches/{batch.id}/jobs", body=body, compress=True,
                                   landed=landed)
        return _ids(data, batch.known, len(group))

    async def _note(self, placed: dict[str, str]) -> None:
        try:
            await self.record(placed)
        except Exception as exc:  # the intent is on record: a restart still finds the jobs
            log.warning("journaling the placement of %d job(s) on %s failed: %s", len(placed), self.device_type, self.redact(str(exc)))

    # -- after a restart -----------------------------------------------------------------------------------------

    async def find(self, placement: dict[str, Any]) -> tuple[str, str] | None:
        """(batch id, job id) of a job whose creating write was interrupted, None when the write never landed."""
        if placement["placing"] == "new":
            found = await self.api.call("GET", "/api/v1/batches",
                                        params={"tag": placement["tag"], "project_id": self.project_id})
            if not found:
                return None
            batch_id, ids, index = str(found[0]["id"]), found[0]["job_ids"], int(placement["index"])
        else:
            batch_id = str(placement["batch"])
            ids = (await self.api.call("GET", f"/api/v2/batches/{batch_id}")).get("job_ids", [])
            index = int(placement["after"]) + int(placement["index"])  # the packer alone appends to its batches
        return (batch_id, str(ids[index])) if index < len(ids) else None

    async def adopt(self, ref: str, batch_id: str, job_id: str) -> None:
        """Follow again a task's job placed before a restart; a batch left open is completed."""
        batch = self._batches.get(batch_id)
        if batch is None:
            data = await self.api.call("GET", f"/api/v2/batches/{batch_id}")
            batch = Batch(batch_id, open=False, known={str(i) for i in data.get("job_ids", [])},
                          needs_complete=bool(data.get("open")))
            self._batches[batch_id] = batch
        job = Job(ref, "", 0, id=job_id, batch=batch)
        batch.jobs[job_id] = job
        self.jobs[ref] = job

    def _runs_full(self, runs: int) -> bool:
        return bool(self.limits.max_runs) and runs >= self.limits.max_runs

    # -- completing batches ------------------------------------------------------------------------------------

    def _retire(self, batch: Batch, complete: bool = True) -> None:
        """Take no more jobs into ``batch``; complete it on the service unless the service already closed it."""
        if batch is self._current:
            self._current = None
        if batch.timer is not None:
            batch.timer.cancel()
        if batch.open:
            batch.open = False
            batch.needs_complete = complete
            if complete:
                self._start_completing(batch)
        self._drop_if_done(batch)

    def _close_soon(self, batch: Batch, only_if_idle: bool) -> None:
        """Retire ``batch`` (its window is over, or it went idle) once no job is being added to it."""

        async def close() -> None:
            async with self._lock:
                idle = self._idle and not self._waiting and batch.drained
                if batch is self._current and (idle or not only_if_idle):
                    self._retire(batch)

        self._spawn(close())

    def _start_completing(self, batch: Batch) -> None:
        if batch.completing is None or batch.completing.done():
            batch.completing = self._spawn(self._complete(batch))

    async def _complete(self, batch: Batch) -> None:
        try:
            await self.api.call("PATCH", f"/api/v2/batches/{batch.id}/complete")
        except Exception as exc:  # the poller tries again
            log.warning("completing batch %s on %s failed: %s", batch.id, self.device_type, self.redact(str(exc)))
            return
        log.info("completed batch %s on %s (%d jobs)", batch.id, self.device_type, len(batch.known))
        batch.needs_complete = False
        self._drop_if_done(batch)

    def _drop_if_done(self, batch: Batch) -> None:
        if not (batch.open or batch.needs_complete or batch.jobs):
            self._batches.pop(batch.id, None)

    # -- following jobs ----------------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        retry_at = loop.time() + self.poll_interval  # completions that failed are tried again on the interval
        while True:
            followed = [batch for batch in self._batches.values() if batch.open or batch.unsettled()]
            wake = min([retry_at, *(batch.due for batch in followed)])
            await asyncio.sleep(max(0.0, wake - loop.time()))
            now = loop.time()
            if now >= retry_at:
                retry_at = now + self.poll_interval
                for batch in list(self._batches.values()):
                    if batch.needs_complete:
                        self._start_completing(batch)
            await asyncio.gather(*(self._poll(batch) for batch in list(self._batches.values())
                                   if (batch.open or batch.unsettled()) and batch.due <= now))

    async def _poll(self, batch: Batch) -> None:
        """One look at ``batch``: settle its finished jobs, notice its end, and close it when it went idle."""
        try:
            status, counts = await self._status(batch)
            ended = sum(counts.get(name, 0) for name in ENDED)
            over = status in BATCH_ENDED
            batch.fruitless = 0 if ended != batch.ended_polled else batch.fruitless + 1
            batch.ended_polled = ended
            if batch.unsettled() and (ended != batch.ended_seen or over):
                params = {"batch_id": batch.id, "status": list(ENDED), "order_by": "creation_order",
                          "order_by_direction": "ASC"}
                for raw in await self.api.listing("/api/v2/jobs", params):
                    if (job := batch.jobs.get(str(raw.get("id")))) is not None and job.status is None:
                        self._learn_run_time(raw)
                        job.settle(job_status(str(raw.get("status")), raw.get("errors"), status, batch.id))
                batch.ended_seen = ended
        except Exception as exc:  # cannot follow the batch any more: its tasks fail with the reason
            log.warning("lost track of batch %s on %s: %s", batch.id, self.device_type, self.redact(str(exc)))
            for job in batch.unsettled():
                job.settle(JobStatus(JobState.FAILED, f"lost track of the job on Pasqal Cloud: {exc}"))
            self._retire(batch)
            return
        if over:
            for job in batch.unsettled():
                job.settle(job_status("PENDING", None, status, batch.id))
            self._retire(batch, complete=False)
            return
        batch.drained = counts.get("PENDING", 0) + counts.get("RUNNING", 0) == 0 and \
            sum(counts.values()) >= len(batch.known)
        batch.due = asyncio.get_running_loop().time() + self._next_poll(batch, counts)
        if batch is self._current and batch.drained and self._idle and self.limits.close_when_idle:
            self._close_soon(batch, only_if_idle=True)

    def _next_poll(self, batch: Batch, counts: dict[str, int]) -> float:
        """Seconds until the next look at ``batch``: when its unfinished jobs are expected to have ended, if that is
        sooner than the poll interval and a job of it runs now; doubled for each look in a row that found none
        ended."""
        left = counts.get("PENDING", 0) + counts.get("RUNNING", 0)
        if not counts.get("RUNNING") or self.run_time is None:  # queued, starting, waiting for jobs: nothing to pace
            return self.poll_interval
        expected = max(self.min_poll_interval, left * self.run_time) * 2 ** min(batch.fruitless, MAX_BACKOFF)
        return min(self.poll_interval, expected)

    def _learn_run_time(self, raw: dict[str, Any]) -> None:
        """Fold a finished job's run time (its service timestamps) into the moving average."""
        try:
            seconds = (datetime.fromisoformat(str(raw["end_timestamp"]))
                       - datetime.fromisoformat(str(raw["start_timestamp"]))).total_seconds()
        except (KeyError, TypeError, ValueError):  # not run (cancelled while pending), or no timestamps given
            return
        if seconds >= 0:
            self.run_time = seconds if self.run_time is None else \
                (1 - RUN_TIME_WEIGHT) * self.run_time + RUN_TIME_WEIGHT * seconds

    async def _status(self, batch: Batch) -> tuple[str, dict[str, int]]:
        """The batch's status and job counts per status (from the batch object on services without
        ``/status``)."""
        try:
            data = await self.api.call("GET", f"/api/v1/batches/{batch.id}/status")
        except ApiError as exc:
            if exc.status not in (404, 405):
                raise
            data = await self.api.call("GET", f"/api/v2/batches/{batch.id}")
        counts = data.get("jobs_count_per_status") or {}
        return str(data.get("status", "")), {str(name): int(count) for name, count in counts.items()}

    async def _cancel_quietly(self, job_id: str) -> None:
        with contextlib.suppress(ApiError):
            await self.api.call("PATCH", f"/api/v2/jobs/{job_id}/cancel")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


async def _unrecorded(refs: dict[str, str]) -> None:
    """No journal."""


def _ids(data: dict[str, Any], known: set[str], count: int) -> list[str]:
    """The ids of the ``count`` jobs just added: those of the batch not ``known`` before, in creation order."""
    ids = [str(job["id"]) for job in data.get("jobs", []) if str(job["id"]) not in known]
    if len(ids) != count:
        raise RuntimeError(f"Pasqal Cloud reports {len(ids)} new job(s) in the batch where {count} were added")
    return ids
