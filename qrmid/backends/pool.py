"""Adapters whose jobs run in warm worker processes (local simulators), off the event loop.

Each worker is a process started once and kept: it sets itself up (imports, warm-up), then runs one job at a time,
sent over a socket of its own as a length-prefixed pickle. The event loop reads the answers as a stream, so no
thread stands between it and a worker and a large result never blocks it. A job goes to the idle worker that
finished last, the warmest one (a hybrid loop's circuit is already parsed there). A job running past
``max_run_seconds``, or cancelled while it runs, has its worker killed and replaced; a worker that dies fails its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import socket
import struct
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qrmid.backends.base import Adapter, BackendState, BackendStatus, JobState, JobStatus, Output
from qrmid.backends.payloads import Payload

log = logging.getLogger(__name__)

HEADER = struct.Struct("!Q")  # the byte length of the pickle that follows
RESTART_SECONDS = 1.0  # wait before replacing a worker that died while starting


class RanTooLong(Exception):
    """The job ran past ``max_run_seconds``; its worker was killed."""


class WorkerEnded(Exception):
    """The worker process running the job ended without answering."""


@dataclass(eq=False)
class _Job:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


@dataclass(eq=False)
class _Worker:
    process: Any  # multiprocessing's SpawnProcess
    writer: asyncio.StreamWriter
    job: _Job | None = None
    ready: bool = False
    timer: asyncio.TimerHandle | None = None
    listener: asyncio.Task[None] | None = field(default=None, repr=False)


class PoolAdapter(Adapter):
    """Runs each job as one call in a worker process; ``slots`` workers, one job each."""

    def __init__(self, workers: int, max_run_seconds: float, warm_up: Callable[[], None]) -> None:
        self.workers = workers
        self.max_run_seconds = max_run_seconds
        self._warm_up = warm_up
        self._context = multiprocessing.get_context("spawn")
        self._pool: set[_Worker] = set()
        self._idle: list[_Worker] = []  # the warmest (last to finish) at the end
        self._pending: deque[_Job] = deque()
        self._jobs: dict[str, asyncio.Future[Any]] = {}
        self._running = False
        self._failure = ""  # why the last worker to start died before it was ready

    @property
    def slots(self) -> int:
        return self.workers

    async def start(self) -> None:
        self._running = True
        await asyncio.gather(*(self._spawn() for _ in range(self.workers)))

    async def close(self) -> None:
        self._running = False
        for worker in list(self._pool):
            worker.process.kill()
        await asyncio.gather(*(worker.listener for worker in list(self._pool) if worker.listener),
                             return_exceptions=True)

    async def status(self) -> BackendStatus:
        if not self._running:
            return BackendStatus(BackendState.OFFLINE, "worker pool is not running")
        if self._failure and not any(worker.ready for worker in self._pool):
            return BackendStatus(BackendState.OFFLINE, f"worker processes cannot start: {self._failure}")
        return BackendStatus(BackendState.ONLINE)

    @abstractmethod
    def job(self, payload: Payload) -> tuple[Callable[..., tuple[bytes, str]], tuple[Any, ...]]:
        """The worker function and its arguments for ``payload``; it returns (result JSON, logs)."""

    async def submit(self, task_id: str, payload: Payload) -> str:
        assert self._running, "start() first"
        function, args = self.job(payload)
        job = _Job(function, args, asyncio.get_running_loop().create_future())
        self._jobs[task_id] = job.future
        self._pending.append(job)
        self._dispatch()
        return task_id

    async def poll(self, ref: str) -> JobStatus:
        future = self._jobs[ref]
        if not future.done():
            return JobStatus(JobState.RUNNING)
        if future.cancelled():
            return JobStatus(JobState.CANCELLED, "cancelled")
        error = future.exception()
        if isinstance(error, RanTooLong):
            return JobStatus(JobState.FAILED, f"simulation ran past max_run_seconds ({self.max_run_seconds:g} s)")
        if error is not None:
            return JobStatus(JobState.FAILED, f"simulation failed: {type(error).__name__}: {error}")
        return JobStatus(JobState.COMPLETED)

    async def wait(self, ref: str, timeout: float) -> JobStatus:
        await asyncio.wait([self._jobs[ref]], timeout=timeout)
        return await self.poll(ref)

    async def cancel(self, ref: str) -> None:
        future = self._jobs[ref]
        for worker in self._pool:
            if worker.job is not None and worker.job.future is future:
                worker.process.kill()  # its listener replaces it
        future.cancel()

    async def output(self, ref: str) -> Output:
        data, logs = self._jobs[ref].result()
        return Output(data=data, logs=logs)

    async def cleanup(self, ref: str) -> None:
        self._jobs.pop(ref, None)

    async def _spawn(self) -> None:
        """Start one worker; it joins the idle ones once it says it is ready."""
        ours, theirs = socket.socketpair()
        process = self._context.Process(target=_serve, args=(theirs, self._warm_up), daemon=True,
                                        name=f"qrmid {type(self).__name__} worker")
        try:
            await asyncio.to_thread(process.start)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = _Worker(process, writer)
        self._pool.add(worker)
        worker.listener = asyncio.create_task(self._listen(worker, reader), name="qrmid pool worker")

    async def _listen(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        """Take ``worker``'s answers until it ends; then fail its job and start another worker."""
        try:
            while True:
                size = HEADER.unpack(await reader.readexactly(HEADER.size))[0]
                outcome, value = pickle.loads(await reader.readexactly(size))
                self._answered(worker, outcome, value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            worker.writer.close()
            self._pool.discard(worker)
            with contextlib.suppress(ValueError):
                self._idle.remove(worker)
        await asyncio.to_thread(worker.process.join)
        ended = WorkerEnded(f"the worker process ended (exit status {worker.process.exitcode})")
        if worker.timer is not None:
            worker.timer.cancel()
        if worker.job is not None and not worker.job.future.done():
            worker.job.future.set_exception(ended)
        if not self._running:
            return
        if not worker.ready:
            self._failure = str(ended)
            log.error("a %s worker died as it started: %s", type(self).__name__, ended)
            await asyncio.sleep(RESTART_SECONDS)
        await self._spawn()

    def _answered(self, worker: _Worker, outcome: str, value: Any) -> None:
        if outcome == "ready":
            worker.ready = True
            self._failure = ""
            self._idle.insert(0, worker)  # the coldest: taken last
            self._dispatch()
            return
        if worker.job is not None:
            if worker.timer is not None:
                worker.timer.cancel()
            if not worker.job.future.done():
                if outcome == "done":
                    worker.job.future.set_result(value)
                else:
                    worker.job.future.set_exception(value)
            worker.job = None
        self._idle.append(worker)
        self._dispatch()

    def _dispatch(self) -> None:
        """Send waiting jobs to idle workers, the one that finished last first."""
        while self._pending and self._idle:
            job = self._pending.popleft()
            if job.future.done():  # cancelled while it waited
                continue
            worker = self._idle.pop()
            worker.job = job
            data = pickle.dumps((job.function, job.args), protocol=pickle.HIGHEST_PROTOCOL)
            worker.writer.write(HEADER.pack(len(data)) + data)  # one write: the worker wakes once
            if self.max_run_seconds:
                worker.timer = asyncio.get_running_loop().call_later(self.max_run_seconds, self._expire, worker, job)

    def _expire(self, worker: _Worker, job: _Job) -> None:
        if worker.job is job and not job.future.done():
            job.future.set_exception(RanTooLong())
            worker.process.kill()


def _serve(channel: socket.socket, warm_up: Callable[[], None]) -> None:
    """A worker's life: set up, say so, then run each job sent and answer it, until the daemon closes the channel."""
    warm_up()
    _send(channel, ("ready", None))
    while (request := _receive(channel)) is not None:
        function, args = request
        try:
            answer = ("done", function(*args))
        except Exception as exc:
            answer = ("failed", exc)
        _send(channel, answer)


def _send(channel: socket.socket, message: tuple[str, Any]) -> None:
    try:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an exception that does not pickle: its type and text do
        data = pickle.dumps(("failed", RuntimeError(f"{type(message[1]).__name__}: {message[1]}: {exc}")))
    channel.sendall(HEADER.pack(len(data)) + data)  # one write: the daemon wakes once


def _receive(channel: socket.socket) -> Any:
    header = _read(channel, HEADER.size)
    return None if header is None else pickle.loads(_read(channel, HEADER.unpack(header)[0]) or b"")


def _read(channel: socket.socket, size: int) -> bytes | None:
    """Exactly ``size`` bytes, or None when the channel closed."""
    data = bytearray(size)
    view = memoryview(data)
    done = 0
    while done < size:
        got = channel.recv_into(view[done:])
        if not got:
            return None
        done += got
    return bytes(data)
