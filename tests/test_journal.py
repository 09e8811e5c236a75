"""The journal: what a restarted daemon keeps (tasks, leases, admins' drains), retention, one daemon per journal,
a full disk, writes SQLite can never store, slow and failing commits, and rows that cannot be read back."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import getpass
import json
import logging
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from daemons import config, running, short_dir
from test_authz import tokens_file

from qrmid.backends.payloads import PulserSequence
from qrmid.client import AsyncClient, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.core.errors import Unavailable
from qrmid.core.leases import Lease
from qrmid.core.tasks import Result, Task, TaskState
from qrmid.daemon import Daemon, StartupError
from qrmid.store.journal import Journal
from qrmid.v1 import admin_pb2, admin_pb2_grpc, metrics_pb2, metrics_pb2_grpc
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


# -- writes SQLite can never store, slow and failing commits --------------------------------------------------------


def absurd_task(owner: str = "mallory") -> Task:
    """A task whose shots (10^20) no SQLite INTEGER holds: its INSERT raises OverflowError, not sqlite3.Error."""
    return Task("noop", owner, PulserSequence("{}", 1), shots=10**20)


async def test_a_write_sqlite_cannot_store_is_refused_alone_and_the_writer_lives_on() -> None:
    path = short_dir() / "journal.db"
    journal = Journal(path)
    journal.open()
    journal.start()
    before = Task("noop", "alice", PulserSequence("{}", 1), events=journal)
    bad = absurd_task()
    after = Task("noop", "bob", PulserSequence("{}", 1), events=journal)
    for task in (before, bad, after):  # one batch: the bad write sits between two good ones
        journal.task_queued(task)
    await journal.recorded(after)
    await journal.recorded(before)
    with pytest.raises(Unavailable, match=f"the journal {path} cannot record task {bad.id} "
                                          r"\(OverflowError: Python int too large"):
        await journal.recorded(bad)
    later = Task("noop", "carol", PulserSequence("{}", 1), events=journal)
    journal.task_queued(later)
    await journal.recorded(later)
    assert journal.error == "", "a refused write is not a disk failure"
    await asyncio.to_thread(journal.close)

    reopened = Journal(path)
    kept = [task.id for task in reopened.open().tasks]
    reopened.close()
    assert kept == [before.id, after.id, later.id]


async def test_an_unstorable_task_leaves_every_other_users_start_task_answered_and_journaled() -> None:
    tokens, secrets = tokens_file({"alice": False, "bob": False})
    cfg = config(NOOP, daemon={"auth": "token"}, auth={"tokens_file": str(tokens)})
    clients = {name: AsyncClient(f"unix:{cfg.daemon.socket}", auth=ClientAuth("token", token=secrets[name]),
                                 timeout=30) for name in ("alice", "bob")}
    async with running(cfg) as daemon:
        assert daemon.journal is not None
        bad = absurd_task()
        daemon.journal.task_queued(bad)  # as if a task of 10^20 shots had passed validation
        started = await asyncio.gather(*(clients[name].start_task("noop", PAYLOAD, request_id=f"{name}-{n}")
                                          for name in ("alice", "bob") for n in range(3)))
        with pytest.raises(Unavailable, match="OverflowError"):
            await daemon.journal.recorded(bad)
        for task in started:
            assert (await clients[task.owner].wait(task.id)).state == pb.TASK_STATE_COMPLETED
    async with running(cfg) as daemon:
        for task in started:
            again = await clients[task.owner].task(task.id)
            assert again.state == pb.TASK_STATE_COMPLETED, "journaled: found after a restart"
        assert bad.id not in {task.id for task in daemon.broker.unfinished("noop")}
    for client in clients.values():
        await client.close()


async def test_one_record_with_absurd_figures_never_fails_utilization_or_accounting() -> None:
    async with running(config(NOOP)) as daemon, grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        absurd = absurd_task()
        absurd.events = daemon.ledger
        absurd.transition(TaskState.RUNNING)
        absurd.transition(TaskState.COMPLETED)
        metrics = metrics_pb2_grpc.MetricsServiceStub(channel)
        used = await metrics.GetUtilization(metrics_pb2.GetUtilizationRequest(resource="noop"))
        assert used.resources[0].shots == 2**63 - 1 and used.resources[0].tasks_completed == 1
        listed = await metrics.ListAccounting(metrics_pb2.ListAccountingRequest(owner="mallory"))
        assert [(record.task_id, record.shots) for record in listed.records] == [(absurd.id, 2**63 - 1)]


class Gate:
    """Fault injection in the journal's writer thread: each commit waits until released, or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error")
        assert self.release.wait(60), "the test never released the commit"


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], Gate]:
    def install(fail: bool = False) -> Gate:
        gate = Gate(fail)
        monkeypatch.setattr(Journal, "before_commit", gate)
        return gate
    return install


async def test_a_retried_request_id_is_answered_only_once_the_first_attempt_is_durable(
        gate: Callable[[bool], Gate], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(NOOP)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}", timeout=30) as first, \
            AsyncClient(f"unix:{daemon.socket}", timeout=30) as second:
        assert daemon.journal is not None
        held = gate(False)
        attempt = asyncio.create_task(first.start_task("noop", PAYLOAD, request_id="once"))
        await asyncio.to_thread(held.entered.wait, 30)
        retry = asyncio.create_task(second.start_task("noop", PAYLOAD, request_id="once"))
        for _ in range(1000):  # until both calls wait on the same commit, or one is answered
            if retry.done() or len(daemon.journal._waiters) >= 2:
                break
            await asyncio.sleep(0.01)
        assert not attempt.done() and not retry.done(), "neither is answered before its task is durable"
        assert len(daemon.journal._waiters) == 2
        held.release.set()
        made, retried = await attempt, await retry
        assert made.id == retried.id

        monkeypatch.setattr(Journal, "before_commit", None)
        failing = gate(True)
        attempt = asyncio.create_task(first.start_task("noop", PAYLOAD, request_id="twice"))
        await asyncio.to_thread(failing.entered.wait, 30)
        retry = asyncio.create_task(second.start_task("noop", PAYLOAD, request_id="twice"))
        errors = []
        for call in (attempt, retry):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            errors.append((refused.value.code(), refused.value.details()))
        assert errors[0][0] == errors[1][0] == grpc.StatusCode.UNAVAILABLE
        assert "disk I/O error" in errors[0][1] and "disk I/O error" in errors[1][1], errors
        monkeypatch.setattr(Journal, "before_commit", None)
        fresh = None
        while fresh is None:  # the writer retries with backoff; the daemon takes tasks once it got through
            try:
                fresh = await first.start_task("noop", PAYLOAD, request_id="twice")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        assert (await first.wait(fresh.id)).state == pb.TASK_STATE_COMPLETED
    with sqlite3.connect(cfg.journal.path) as db:
        rows = db.execute("SELECT client_request_id, id FROM tasks ORDER BY rowid").fetchall()
    assert rows == [("once", made.id), ("twice", fresh.id)], "one task per request id, the refused one is gone"


async def test_a_commit_slower_than_the_bound_answers_unavailable_and_the_task_never_runs(
        gate: Callable[[bool], Gate]) -> None:
    cfg = config(NOOP, journal={"commit_timeout_seconds": 0.5})
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}", timeout=60) as qrmid:
        held = gate(False)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await qrmid.start_task("noop", PAYLOAD, request_id="slow")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"the journal {cfg.journal.path} has not committed for 0.5 s" in (refused.value.details() or "")
        assert daemon.broker.unfinished("noop") == [], "a task not journaled is not queued, nor run"
        held.release.set()
        again = await qrmid.start_task("noop", PAYLOAD, request_id="slow")
        assert (await qrmid.wait(again.id)).state == pb.TASK_STATE_COMPLETED
        async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            accounting = await metrics_pb2_grpc.MetricsServiceStub(channel).ListAccounting(
                metrics_pb2.ListAccountingRequest())
        assert [record.task_id for record in accounting.records] == [again.id], "the refused task is not accounted"
    with sqlite3.connect(cfg.journal.path) as db:
        rows = db.execute("SELECT id, state FROM tasks").fetchall()
    assert rows == [(again.id, "completed")], "the refused task's late record was deleted"


# -- rows that cannot be read back -------------------------------------------------------------------------------


async def test_undecodable_rows_are_quarantined_and_the_daemon_starts(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(NOOP)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        tasks = [await qrmid.start_task("noop", PAYLOAD) for _ in range(5)]
        for task in tasks:
            await qrmid.wait(task.id)
        lease = await qrmid.acquire("noop", ttl_seconds=3600)
        kept_lease = await qrmid.acquire("noop", ttl_seconds=3600)
    broken = {tasks[0].id: ("state", "exploded"), tasks[1].id: ("payload", b"{not json"),
              tasks[2].id: ("payload_kind", "quantum_annealer"), tasks[3].id: ("shots", 1e20)}
    with sqlite3.connect(cfg.journal.path) as db:
        for task_id, (column, value) in broken.items():
            db.execute(f"UPDATE tasks SET {column} = ? WHERE id = ?", (value, task_id))
        db.execute("UPDATE leases SET created_at = 'yesterday' WHERE id = ?", (lease.id,))
        rowids = dict(db.execute("SELECT id, rowid FROM tasks"))

    caplog.set_level(logging.ERROR, logger="qrmid.store.journal")
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        for task_id in broken:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await qrmid.task(task_id)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await qrmid.task(tasks[4].id)).state == pb.TASK_STATE_COMPLETED, "readable rows are restored"
        assert [held.id for held in await qrmid.list_leases("noop")] == [kept_lease.id]
        async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            listed = await admin_pb2_grpc.AdminServiceStub(channel).ListQuarantine(admin_pb2.ListQuarantineRequest())
    assert listed.journal == str(cfg.journal.path)
    rows = {row.key: row for row in listed.rows}
    assert set(rows) == {*broken, lease.id}, "every id in full"
    assert rows[tasks[0].id].reason == "column state is 'exploded', not a task state"
    assert rows[tasks[1].id].reason.startswith("the payload is not JSON")
    assert rows[tasks[2].id].reason == "unknown payload kind 'quantum_annealer'"
    assert rows[tasks[3].id].reason == "column shots holds float 1e+20, not int"
    assert rows[lease.id].source == "leases" and "column created_at holds str 'yesterday'" in rows[lease.id].reason
    for task_id in broken:
        assert (rows[task_id].source, rows[task_id].row_id) == ("tasks", rowids[task_id])
        logged = [r.getMessage() for r in caplog.records if task_id in r.getMessage()]
        assert logged == [(f"journal {cfg.journal.path}: row {rowids[task_id]} of table tasks ({task_id}) cannot "
                           f"be read: {rows[task_id].reason}; it was moved to the quarantine table and start-up goes "
                           "on (`qrmid admin quarantine` lists it)")]

    with sqlite3.connect(cfg.journal.path) as db:
        raw = json.loads(db.execute("SELECT raw FROM quarantine WHERE key = ?", (tasks[0].id,)).fetchone()[0])
        assert (raw["id"], raw["state"], raw["owner"]) == (tasks[0].id, "exploded", getpass.getuser())
        raw = json.loads(db.execute("SELECT raw FROM quarantine WHERE key = ?", (tasks[1].id,)).fetchone()[0])
        assert base64.b64decode(raw["payload"]["base64"]) == b"{not json", "the raw row is kept as it was"
    caplog.clear()
    async with running(cfg) as daemon:  # quarantined once: the next start is clean, the listing stays
        assert daemon.journal is not None and len(daemon.journal.quarantined) == 5
    assert not caplog.records


async def test_an_admins_drain_and_resume_survive_restarts() -> None:
    cfg = config([*NOOP, {"type": "noop", "name": "other", "slots": 1}])
    async with running(cfg) as daemon, grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await admin.DrainResource(admin_pb2.DrainResourceRequest(resource="noop", reason="firmware 14:00-16:00"))
        await admin.DrainResource(admin_pb2.DrainResourceRequest(resource="other", reason="short break"))
        await admin.ResumeResource(admin_pb2.ResumeResourceRequest(resource="other"))
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        drained = await qrmid.resource("noop")
        assert (drained.status, drained.status_reason) == (pb.RESOURCE_STATUS_DRAINING, "firmware 14:00-16:00")
        assert (await qrmid.resource("other")).status == pb.RESOURCE_STATUS_ONLINE
        held = await qrmid.start_task("noop", PAYLOAD)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid, \
            grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        assert (await qrmid.resource("noop")).status == pb.RESOURCE_STATUS_DRAINING, "still drained"
        assert (await qrmid.task(held.id)).state == pb.TASK_STATE_QUEUED, "its queue waits"
        await admin_pb2_grpc.AdminServiceStub(channel).ResumeResource(admin_pb2.ResumeResourceRequest(resource="noop"))
        assert (await qrmid.wait(held.id)).state == pb.TASK_STATE_COMPLETED
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        assert (await qrmid.resource("noop")).status == pb.RESOURCE_STATUS_ONLINE, "the resume is kept too"


async def test_a_task_whose_caller_gave_up_is_still_taken_back_when_its_record_fails(
        gate: Callable[[bool], Gate]) -> None:
    cfg = config(NOOP, journal={"commit_timeout_seconds": 1})
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}", timeout=0.2) as hasty, \
            AsyncClient(f"unix:{daemon.socket}", timeout=30) as patient:
        held = gate(False)
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await hasty.start_task("noop", PAYLOAD, request_id="hasty")
        assert gone.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        while daemon.broker._accepting:  # its commit is still awaited on the daemon's side, until the bound
            await asyncio.sleep(0.05)
        assert daemon.broker.unfinished("noop") == [], "taken back: it neither waits in the queue nor runs"
        held.release.set()
        after = await patient.start_task("noop", PAYLOAD, request_id="hasty")
        assert (await patient.wait(after.id)).state == pb.TASK_STATE_COMPLETED
    with sqlite3.connect(cfg.journal.path) as db:
        assert db.execute("SELECT id FROM tasks").fetchall() == [(after.id,)]
