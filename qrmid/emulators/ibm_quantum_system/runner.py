"""Runs admitted jobs: input from the presigned GET URL, simulation in a process pool, results and logs to the
presigned PUT URLs, then the terminal state. The event loop only waits; simulation happens in worker processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any

import httpx

from .config import EmulatorConfig
from .jobs import COMPLETED, FAILED, Job, JobStore, rfc3339
from .protocol import PRIMITIVE_FAILED, STORAGE_ERROR, TIMED_OUT, SimulationOutcome, SimulationRequest

LEVELS = ("debug", "info", "warning", "error", "critical")

log = logging.getLogger(__name__)


def _simulate(request: SimulationRequest) -> SimulationOutcome:
    """Worker entry point; the Qiskit stack is imported only in worker processes."""
    from .simulate import execute

    return execute(request)


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit when the server process is gone, even if it was killed without a shutdown."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _warm(configuration_file: str, properties_file: str, noise: bool) -> None:
    from .simulate import warm

    warm(configuration_file, properties_file, noise)


class StorageError(Exception):
    """An object could not be read from or written to its presigned URL."""


class JobLog:
    """The job's log text, keeping the lines at or above its ``log_level``."""

    def __init__(self, level: str) -> None:
        self.threshold = LEVELS.index(level)
        self.lines: list[str] = []

    def add(self, level: str, message: str) -> None:
        if LEVELS.index(level.lower()) >= self.threshold:
            self.lines.append(f"{rfc3339(datetime.now(UTC))} {level.upper()} {message}")

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


class Runner:
    """Owns the HTTP client for storage and the simulation process pool."""

    def __init__(self, config: EmulatorConfig, store: JobStore) -> None:
        self.config = config
        self.store = store
        self.http = httpx.AsyncClient(timeout=config.storage_timeout_s)
        self.pool = self._new_pool()
        self.tasks: set[asyncio.Future[Any]] = set()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.config.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )

    def warm(self) -> None:
        """Start loading the simulation stack in the background."""
        loop = asyncio.get_running_loop()
        devices = {(str(s.files[0]), str(s.files[1]), s.config.noise) for s in self.store.backends.values()}
        for conf, props, noise in devices:
            self._track(asyncio.ensure_future(loop.run_in_executor(self.pool, _warm, conf, props, noise)))

    def launch(self, job: Job) -> None:
        job.task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._track(job.task)

    def _track(self, task: asyncio.Future[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.aclose()
        await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)

    async def _run(self, job: Job) -> None:
        joblog = JobLog(job.log_level)
        joblog.add("info", f"Job {job.id} started: {job.program_id} on backend {job.backend}")
        ends = time.monotonic() + self.store.backends[job.backend].job_duration_s
        try:
            timeout = job.timeout_secs if self.config.enforce_timeout else None
            async with asyncio.timeout(timeout):
                outcome = await self._execute(job, joblog, ends)
        except TimeoutError:
            outcome = SimulationOutcome(
                reason_code=TIMED_OUT, reason_message=f"Job exceeded its timeout of {job.timeout_secs} s."
            )
        except StorageError as exc:
            outcome = SimulationOutcome(reason_code=STORAGE_ERROR, reason_message=str(exc))
        except Exception as exc:  # a job must end, never stay Running after an emulator fault
            log.exception("job %s", job.id)
            outcome = SimulationOutcome(reason_code=PRIMITIVE_FAILED, reason_message=f"Internal error: {exc!r}")
        if outcome.reason_code is None:
            job.finish(COMPLETED, quantum_nanoseconds=outcome.quantum_nanoseconds)
            return
        joblog.add("error", f"Job {job.id} failed: {outcome.reason_message}")
        try:
            await self._put(job, "logs", joblog.text(), "text/plain")
        except StorageError as exc:
            log.info("job %s: %s", job.id, exc)
        job.finish(FAILED, reason_code=outcome.reason_code, reason_message=outcome.reason_message)

    async def _execute(self, job: Job, joblog: JobLog, ends: float) -> SimulationOutcome:
        """Read the input, simulate, write the results and logs, and wait until the job's run time is over: its own
        work counts within it."""
        state = self.store.backends[job.backend]
        failure = state.take_failure()
        input_text = await self._get_input(job)
        joblog.add("debug", f"Read {len(input_text)} bytes of input")
        if failure is not None:
            outcome = SimulationOutcome(reason_code=failure.reason_code, reason_message=failure.reason_message)
        else:
            outcome = await self._simulate(job, input_text)
        for level, message in outcome.log:
            joblog.add(level, message)
        if outcome.reason_code is None:
            await self._put(job, "results", outcome.results or "", "application/json")
            joblog.add("info", f"Job {job.id} completed")
            await self._put(job, "logs", joblog.text(), "text/plain")
        await asyncio.sleep(max(ends - time.monotonic(), 0.0))
        return outcome

    async def _simulate(self, job: Job, input_text: str) -> SimulationOutcome:
        state = self.store.backends[job.backend]
        conf, props = state.files
        request = SimulationRequest(
            job.program_id,
            input_text,
            str(conf),
            str(props),
            state.config.noise,
            state.config.seed,
            pad_circuits=state.pub_widths == "lenient",
        )
        pool = self.pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _simulate, request)
        except BrokenProcessPool as exc:
            if self.pool is pool:
                self.pool = self._new_pool()
                pool.shutdown(wait=False)
            return SimulationOutcome(reason_code=PRIMITIVE_FAILED, reason_message=f"Simulation worker died: {exc}")

    async def _get_input(self, job: Job) -> str:
        url = job.storage["input"]["presigned_url"]
        try:
            response = await self.http.get(url)
        except httpx.HTTPError as exc:
            raise StorageError(f"Could not read the job input: {exc!r}") from None
        if response.status_code != 200:
            raise StorageError(f"Could not read the job input: HTTP {response.status_code} {response.text[:200]}")
        return response.text

    async def _put(self, job: Job, kind: str, body: str, content_type: str) -> None:
        target = job.storage.get(kind)
        if target is None:
            return
        try:
            response = await self.http.put(
                target["presigned_url"], content=body.encode(), headers={"Content-Type": content_type}
            )
        except httpx.HTTPError as exc:
            raise StorageError(f"Could not write the job {kind}: {exc!r}") from None
        if response.status_code != 200:
            raise StorageError(f"Could not write the job {kind}: HTTP {response.status_code} {response.text[:200]}")
