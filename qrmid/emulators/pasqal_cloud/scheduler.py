"""Drives each batch through its device: admission, per-batch overhead, jobs one by one, idle time-out.

One asyncio task per batch. It waits for the device (see ``devices.Device.admit``), pays the batch overhead,
then runs its pending jobs in creation order, each taking at least ``job_duration_s``. An open batch with no
pending job waits for more; after ``open_batch_timeout_s`` without new jobs it ends ``TIMED_OUT``. The device
is released once the batch is closed with every job terminal, cancelled, or timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from .config import EmulatorConfig
from .devices import Device
from .runner import Runner
from .store import Batch, Job, now_iso


@dataclass
class DeviceLoad:
    """How many batches of one device type were unfinished at once (created and not yet ended)."""

    unfinished: int = 0
    max_unfinished: int = 0


@dataclass
class Scheduler:
    """Starts, cancels and finishes batch tasks."""

    config: EmulatorConfig
    devices: dict[str, Device]
    runner: Runner
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    load: dict[str, DeviceLoad] = field(default_factory=dict)

    def start(self, batch: Batch) -> None:
        """Queue a new batch on its device."""
        load = self.load.setdefault(batch.device_type, DeviceLoad())
        load.unfinished += 1
        load.max_unfinished = max(load.max_unfinished, load.unfinished)
        self.tasks[batch.id] = asyncio.create_task(self._drive(batch), name=f"batch-{batch.id}")

    def cancel(self, batch: Batch) -> None:
        """Cancel every unfinished job, pin the batch CANCELED and stop its task."""
        for job in batch.jobs:
            if job.status in ("PENDING", "RUNNING"):
                job.move("CANCELED")
        batch.pinned_status = "CANCELED"
        batch.open = False
        batch.touch()
        task = self.tasks.get(batch.id)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Stop every batch task (at shutdown)."""
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _drive(self, batch: Batch) -> None:
        device = self.devices[batch.device_type]
        admitted = False
        try:
            await device.admit(batch.id)
            admitted = True
            batch.start_datetime = now_iso()
            batch.touch()
            await asyncio.sleep(self.config.batch_overhead_s)
            await self._work(batch, device)
        finally:
            batch.end_datetime = batch.end_datetime or now_iso()
            batch.open = False
            if admitted:
                await device.release(batch.id)
            self.load[batch.device_type].unfinished -= 1
            self.tasks.pop(batch.id, None)

    async def _work(self, batch: Batch, device: Device) -> None:
        idle_since = time.monotonic()
        while not batch.finished:
            batch.wake.clear()
            job = next((job for job in batch.jobs if job.status == "PENDING"), None)
            if job is not None:
                await device.wait_up()
                if job.status == "PENDING":
                    await self._run_job(batch, job, device)
                idle_since = time.monotonic()
                continue
            if not batch.open:
                return
            deadline = max(idle_since, batch.last_added) + self.config.open_batch_timeout_s
            if time.monotonic() >= deadline:
                batch.pinned_status = "TIMED_OUT"
                batch.open = False
                batch.touch()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    await batch.wake.wait()

    async def _run_job(self, batch: Batch, job: Job, device: Device) -> None:
        job.move("RUNNING")
        batch.touch()
        injected = device.error_jobs > 0
        if injected:
            device.error_jobs -= 1
            work: asyncio.Future[Any] = asyncio.ensure_future(asyncio.sleep(self.config.job_duration_s))
        else:
            program = job.sequence if job.sequence is not None else batch.sequence_builder or ""
            work = asyncio.gather(
                self.runner.run(program, job.variables, job.runs, self.config.seed + job.order),
                asyncio.sleep(self.config.job_duration_s),
            )
        canceled = asyncio.ensure_future(job.canceled.wait())
        try:
            await asyncio.wait({work, canceled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            canceled.cancel()
            if not work.done():
                work.cancel()
        if job.status != "RUNNING":
            if work.done() and not work.cancelled():
                work.exception()  # the job was cancelled: its outcome is dropped
            return
        failure = work.exception()
        if injected:
            job.errors.append("Execution failed on the device")
            job.move("ERROR")
        elif failure is not None:
            job.errors.append(f"{type(failure).__name__}: {failure}")
            job.move("ERROR")
        else:
            job.result = work.result()[0]
            job.move("DONE")
        batch.touch()
