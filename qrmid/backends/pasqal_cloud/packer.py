"""Open-batch packing: a resource's tasks become the jobs of shared open batches on its device type.

The first waiting tasks open a batch (``POST /api/v1/batches`` with ``open: true``); later ones are appended to
it (``POST /api/v2/batches/{id}/jobs``), and the tasks that arrive while one such request is on the wire go
together in the next. A batch is completed (``PATCH /api/v2/batches/{id}/complete``) when

- its window has passed since it was opened;
- it holds the most jobs, or runs, a batch may hold;
- (``close_when_idle``) the resource has nothing more to give it (queue empty, no submission in flight) and every
  job of the batch has finished, so the batch would only hold the device idle. Completing at the first empty
  queue instead would close a batch after nearly every task, as tasks reach the queue one by one.

One poll per interval per batch (its status counts, and the list of its finished jobs only when those counts
moved) settles every task of that batch. Writes are never sent twice: before retrying one, the packer looks
for the effect of the earlier attempt (the batch's unique tag, or new job ids in the batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from qrmid.backends.base import JobState, JobStatus
from qrmid.backends.pasqal_cloud.api import ApiError, PasqalApi

log = logging.getLogger(__name__)

ENDED = ("DONE", "ERROR", "CANCELED")
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
    """A task's job in a batch; ``status`` is set once, when the job is terminal."""

    id: str
    batch: Batch
    status: JobStatus | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def settle(self, status: JobStatus) -> None:
        if self.status is None and status.state.terminal:
            self.status = status
            self.settled.set()


@dataclass(eq=False)
class Batch:
    """A batch this packer made, and the tasks' jobs in it that are still followed."""

    id: str
    open: bool
    known: set[str] = field(default_factory=set)  # every job id the batch holds
    runs: int = 0
    jobs: dict[str, Job] = field(default_factory=dict)
    drained: bool = False  # last poll: every job of the batch finished
    ended_seen: int = -1  # finished-job count behind the last listing of finished jobs
    needs_complete: bool = False
    completing: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None

    def unsettled(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.status is None]


@dataclass(eq=False)
class _Request:
    sequence: str
    runs: int
    future: asyncio.Future[Job]


class Packer:
    """Packs the jobs of one device type and project into open batches and follows them."""

    def __init__(self, api: PasqalApi, device_type: str, project_id: str, limits: Limits,
                 poll_interval: float) -> None:
        self.api = api
        self.device_type = device_type
        self.project_id = project_id
        self.limits = limits
        self.poll_interval = poll_interval
        self.jobs: dict[str, Job] = {}
        self._batches: dict[str, Batch] = {}
        self._current: Batch | None = None
        self._waiting: deque[_Request] = deque()
        self._lock = asyncio.Lock()  # held while the open batch changes: opening, appending, completing
        self._pump: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._idle = False
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever(), name=f"pasqal {self.device_type} poller")

    async def stop(self) -> None:
        """Stop polling and complete every batch still open, within STOP_SECONDS."""
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
            await asyncio.wait_for(asyncio.gather(*(self._complete(batch) for batch in pending)), STOP_SECONDS)

    async def add(self, sequence: str, runs: int) -> Job:
        """Put one job in the open batch (opening one if needed) and return it once the service holds it."""
        request = _Request(sequence, runs, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._idle = False
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._drain(), name=f"pasqal {self.device_type} packer")
        return await request.future

    def idle(self) -> None:
        """The resource has nothing queued and nothing being submitted."""
        self._idle = True
        if self.limits.close_when_idle and self._current is not None and self._current.drained:
            self._close_soon(self._current, only_if_idle=True)

    def forget(self, job_id: str) -> None:
        """Stop following a job once its task is over."""
        job = self.jobs.pop(job_id, None)
        if job is not None:
            job.batch.jobs.pop(job_id, None)
            self._drop_if_done(job.batch)

    # -- placing jobs ------------------------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            async with self._lock:
                while self._waiting and self._waiting[0].future.done():  # cancelled while waiting
                    self._waiting.popleft()
                if not self._waiting:
                    return
                group = self._fitting(self._current)
                if not group:  # the open batch is full for the next task
                    assert self._current is not None
                    self._retire(self._current)
                    continue
                await self._place(group)

    def _fitting(self, batch: Batch | None) -> list[_Request]:
        """The waiting requests, in order, that fit in ``batch`` (a new batch takes at least one)."""
        room = self.limits.max_jobs - (len(batch.known) if batch else 0)
        runs_room = self.limits.max_runs - (batch.runs if batch else 0) if self.limits.max_runs else None
        group: list[_Request] = []
        for request in self._waiting:
            if request.future.done():
                continue
            fits = runs_room is None or request.runs <= runs_room or (batch is None and not group)
            if len(group) >= room or not fits:
                break
            group.append(request)
            if runs_room is not None:
                runs_room -= request.runs
        for request in group:
            self._waiting.remove(request)
        return group

    async def _place(self, group: list[_Request]) -> None:
        """Open a batch with ``group`` or append it to the open one; answer every request of the group."""
        try:
            batch, ids = await self._submit(group)
        except ApiError as exc:
            if len(group) == 1:
                _fail(group, exc)
                return
            for request in group:  # one refused job must not fail the others: place them one by one
                await self._place([request])
            return
        except Exception as exc:
            _fail(group, exc)
            return
        for request, job_id in zip(group, ids, strict=True):
            batch.known.add(job_id)
            batch.runs += request.runs
            if request.future.cancelled():  # its task was stopped while the job was being added
                self._spawn(self._cancel_quietly(job_id))
                continue
            job = Job(job_id, batch)
            batch.jobs[job_id] = job
            self.jobs[job_id] = job
            request.future.set_result(job)
        batch.drained = False
        if batch.open and (len(batch.known) >= self.limits.max_jobs or self._runs_full(batch.runs)):
            self._retire(batch)

    async def _submit(self, group: list[_Request]) -> tuple[Batch, list[str]]:
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

    async def _open(self, group: list[_Request]) -> tuple[Batch, list[str]]:
        tag = f"qrmid-{uuid.uuid4()}"
        full = len(group) >= self.limits.max_jobs or self._runs_full(sum(request.runs for request in group))
        jobs: list[dict[str, Any]] = [{"runs": group[0].runs}]  # the first job runs the batch's own sequence
        jobs += [{"runs": request.runs, "sequence": request.sequence} for request in group[1:]]
        body = {"sequence_builder": group[0].sequence, "jobs": jobs, "device_type": self.device_type,
                "project_id": self.project_id, "open": not full, "tags": [tag]}

        async def landed() -> dict[str, Any] | None:
            found = await self.api.once("/api/v1/batches", {"tag": tag, "project_id": self.project_id})
            return {"id": found[0]["id"], "jobs": [{"id": i} for i in found[0]["job_ids"]]} if found else None

        data = await self.api.call("POST", "/api/v1/batches", body=body, compress=True, landed=landed)
        batch = Batch(str(data["id"]), open=not full)
        self._batches[batch.id] = batch
        if batch.open:
            self._current = batch
            batch.timer = asyncio.get_running_loop().call_later(self.limits.window, self._close_soon, batch, False)
        log.info("opened batch %s on %s with %d job(s)", batch.id, self.device_type, len(group))
        return batch, _ids(data, set(), len(group))

    async def _append(self, batch: Batch, group: list[_Request]) -> list[str]:
        body = [{"runs": request.runs, "sequence": request.sequence} for request in group]

        async def landed() -> dict[str, Any] | None:
            now = await self.api.once(f"/api/v2/batches/{batch.id}")
            held = [{"id": i} for i in now.get("job_ids", [])]
            return {"jobs": held} if any(job["id"] not in batch.known for job in held) else None

        data = await self.api.call("POST", f"/api/v2/batches/{batch.id}/jobs", body=body, compress=True,
                                   landed=landed)
        return _ids(data, batch.known, len(group))

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
                if batch is self._current and (not only_if_idle or self._idle and batch.drained):
                    self._retire(batch)

        self._spawn(close())

    def _start_completing(self, batch: Batch) -> None:
        if batch.completing is None or batch.completing.done():
            batch.completing = self._spawn(self._complete(batch))

    async def _complete(self, batch: Batch) -> None:
        try:
            await self.api.call("PATCH", f"/api/v2/batches/{batch.id}/complete")
        except Exception as exc:  # the poller tries again
            log.warning("completing batch %s on %s failed: %s", batch.id, self.device_type, exc)
            return
        log.info("completed batch %s on %s (%d jobs)", batch.id, self.device_type, len(batch.known))
        batch.needs_complete = False
        self._drop_if_done(batch)

    def _drop_if_done(self, batch: Batch) -> None:
        if not (batch.open or batch.needs_complete or batch.jobs):
            self._batches.pop(batch.id, None)

    # -- following jobs ----------------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            for batch in list(self._batches.values()):
                if batch.needs_complete:
                    self._start_completing(batch)
            await asyncio.gather(*(self._poll(batch) for batch in list(self._batches.values())
                                   if batch.open or batch.unsettled()))

    async def _poll(self, batch: Batch) -> None:
        """One look at ``batch``: settle its finished jobs, notice its end, and close it when it went idle."""
        try:
            status, counts = await self._status(batch)
            ended = sum(counts.get(name, 0) for name in ENDED)
            over = status in BATCH_ENDED
            if batch.unsettled() and (ended != batch.ended_seen or over):
                params = {"batch_id": batch.id, "status": list(ENDED), "order_by": "creation_order",
                          "order_by_direction": "ASC"}
                for raw in await self.api.listing("/api/v2/jobs", params):
                    if (job := batch.jobs.get(str(raw.get("id")))) is not None:
                        job.settle(job_status(str(raw.get("status")), raw.get("errors"), status, batch.id))
                batch.ended_seen = ended
        except Exception as exc:  # cannot follow the batch any more: its tasks fail with the reason
            log.warning("lost track of batch %s on %s: %s", batch.id, self.device_type, exc)
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
        if batch is self._current and batch.drained and self._idle and self.limits.close_when_idle:
            self._close_soon(batch, only_if_idle=True)

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


def _ids(data: dict[str, Any], known: set[str], count: int) -> list[str]:
    """The ids of the ``count`` jobs just added: those of the batch not ``known`` before, in creation order."""
    ids = [str(job["id"]) for job in data.get("jobs", []) if str(job["id"]) not in known]
    if len(ids) != count:
        raise RuntimeError(f"Pasqal Cloud reports {len(ids)} new job(s) in the batch where {count} were added")
    return ids


def _fail(group: list[_Request], exc: Exception) -> None:
    for request in group:
        if not request.future.done():
            request.future.set_exception(exc)

