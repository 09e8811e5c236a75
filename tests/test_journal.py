"""The journal: what a restarted daemon keeps, retention, one daemon per journal, and a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemons import config, running, short_dir

from qrmid.backends.payloads import PulserSequence
from qrmid.client import AsyncClient, pulser_payload
from qrmid.core.leases import Lease
from qrmid.core.tasks import Result, Task, TaskState
from qrmid.daemon import Daemon, StartupError
from qrmid.store.journal import Journal
from qrmid.v1 import metrics_pb2, metrics_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

NOOP = [{"type": "noop", "name": "noop", "slots": 4}]
PAYLOAD = pulser_payload({"sequence": "x"}, 3)
LEASE = Lease(resource="noop", owner="alice", expires_at=0)


async def test_finished_tasks_leases_and_request_ids_survive_a_restart() -> None:
    cfg = config(NOOP)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        lease = await qrmid.acquire("noop", slurm_job_id="42", ttl_seconds=3600)
        tasks = [await qrmid.start_task("noop", PAYLOAD, request_id=f"r{i}", lease_token=lease.token)
                 for i in range(3)]
        before = {task.id: (await qrmid.wait(task.id), await qrmid.result(task.id),
                                 await qrmid.logs(task.id)) for task in tasks}
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        for task_id, (final, result, logs) in before.items():
            after = await qrmid.task(task_id)
            assert after.state == pb.TASK_STATE_COMPLETED and after.slurm_job_id == "42"
            assert after.create_time == final.create_time and after.end_time == final.end_time
            assert await qrmid.result(task_id) == result and await qrmid.logs(task_id) == logs
        async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            accounting = await metrics_pb2_grpc.MetricsServiceStub(channel).ListAccounting(
                metrics_pb2.ListAccountingRequest())
        assert {record.task_id for record in accounting.records} == set(before), "accounting outlives a restart"
        again = await qrmid.start_task("noop", PAYLOAD, request_id="r1", lease_token=lease.token)
        assert again.id == tasks[1].id, "a retried request id returns the task made before the restart"
        assert [held.id for held in await qrmid.list_leases("noop")] == [lease.id]
        fresh = await qrmid.start_task("noop", PAYLOAD, request_id="r3", lease_token=lease.token)
        assert (await qrmid.wait(fresh.id)).state == pb.TASK_STATE_COMPLETED
        await qrmid.release(lease.token)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        assert await qrmid.list_leases("noop") == [], "a released lease stays released"
        assert (await qrmid.task(fresh.id)).state == pb.TASK_STATE_COMPLETED


async def test_a_second_daemon_on_the_same_journal_is_refused() -> None:
    first = config(NOOP)
    second = config(NOOP, journal={"path": str(first.journal.path)})
    async with running(first):
        with pytest.raises(StartupError, match="is in use by another qrmid; give each daemon its own"):
            await Daemon(second).start()


async def test_retention_drops_finished_tasks_by_age_and_by_total_size() -> None:
    path = short_dir() / "journal.db"
    journal = Journal(path, max_result_bytes=2500, cleanup_interval=3600)
    journal.open()
    journal.start()
    tasks = []
    for size in (1000, 1000, 1000, 1000):
        task = Task("noop", "alice", PulserSequence("{}", 1), events=journal)
        journal.task_queued(task)
        task.transition(TaskState.RUNNING)
        task.result = Result(b"x" * size)
        task.transition(TaskState.COMPLETED)
        tasks.append(task)
    running_task = Task("noop", "bob", PulserSequence("{}", 1), events=journal)
    journal.task_queued(running_task)
    await journal.durable()
    journal.cleanup_interval = 0  # the next commit cleans up
    journal.lease_granted(LEASE)
    await journal.durable()
    await asyncio.to_thread(journal.close)

    reopened = Journal(path)
    kept = {task.id for task in reopened.open().tasks}
    reopened.close()
    assert kept == {tasks[2].id, tasks[3].id, running_task.id}, "the oldest results go first; unfinished stay"

    journal = Journal(path, retain_seconds=1e-3, cleanup_interval=0)
    journal.open()
    journal.start()
    await asyncio.sleep(0.01)
    journal.lease_ended(LEASE, "released")  # any write runs the cleanup with it
    await journal.durable()
    await asyncio.to_thread(journal.close)
    reopened = Journal(path)
    assert [task.id for task in reopened.open().tasks] == [running_task.id], "finished tasks past their age go"
    reopened.close()


@contextlib.contextmanager
def small_filesystem(size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` (the test runs as root, as the CI does)."""
    mount = short_dir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)], check=True,
                       capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test: {exc}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its filesystem is full."""
    filler = directory / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


async def test_a_full_disk_refuses_new_tasks_clearly_and_recovers_when_space_returns() -> None:
    with small_filesystem() as mount:
        path = mount / "journal.db"
        cfg = config(NOOP, journal={"path": str(path)})
        big = pulser_payload({"sequence": "y" * 200_000}, 1)
        async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
            kept = await qrmid.start_task("noop", PAYLOAD)
            assert (await qrmid.wait(kept.id)).state == pb.TASK_STATE_COMPLETED
            filler = fill(mount)
            refused = None
            for _ in range(10):
                try:
                    await qrmid.start_task("noop", big)
                except grpc.aio.AioRpcError as exc:
                    refused = exc
                    break
            assert refused is not None, "a task the journal cannot record is never accepted"
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            assert f"the journal {path} cannot be written" in refused.details()
            assert "free space on its filesystem" in refused.details()
            assert (await qrmid.task(kept.id)).state == pb.TASK_STATE_COMPLETED, "the daemon keeps serving"

            filler.unlink()
            accepted = None
            for _ in range(100):  # the writer retries; new tasks are taken once it got through
                try:
                    accepted = await qrmid.start_task("noop", PAYLOAD)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    await asyncio.sleep(0.2)
            assert accepted is not None, "the journal is written again once space returns"
            assert (await qrmid.wait(accepted.id)).state == pb.TASK_STATE_COMPLETED

        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
            assert (await qrmid.task(kept.id)).state == pb.TASK_STATE_COMPLETED
            assert (await qrmid.task(accepted.id)).state == pb.TASK_STATE_COMPLETED


async def test_a_read_only_journal_stops_the_daemon_from_starting_with_a_clear_error() -> None:
    with small_filesystem("8m") as mount:
        cfg = config(NOOP, journal={"path": str(mount / "journal.db")})
        async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
            kept = await qrmid.start_task("noop", PAYLOAD)
            assert (await qrmid.wait(kept.id)).state == pb.TASK_STATE_COMPLETED
        await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(StartupError, match=f"journal {mount / 'journal.db'}: Read-only file system"):
            await Daemon(cfg).start()
        await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,rw", str(mount)], check=True)
        async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
            assert (await qrmid.task(kept.id)).state == pb.TASK_STATE_COMPLETED
