"""``qrmid cluster import-journal``: a single daemon's SQLite journal moved into a real PostgreSQL server, then
served and run on by a daemon on the PostgreSQL store; refused while the daemon runs and when already imported."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
from daemons import ROOT, config, running, short_dir, write_config
from google.protobuf.timestamp_pb2 import Timestamp
from postgres import Database
from test_identity import free_port
from test_postgres_store import NOOP, PAYLOAD, cluster, password_file

from qrmid.client import AsyncClient
from qrmid.v1 import admin_pb2, admin_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

RESOURCES = [*NOOP, {"type": "noop", "name": "other", "slots": 1}]


def import_journal(journal: Path, db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    """``qrmid cluster import-journal`` in its own process, with a config whose [cluster] names ``db``."""
    cfg = write_config(short_dir() / "cluster.toml", f"""
[cluster]
dsn = "{db.dsn}"
password_file = "{password_file(db)}"
member = "node-a"
""")
    return subprocess.run([sys.executable, "-m", "qrmid", "cluster", "import-journal", str(journal), "--config",
                           str(cfg), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def journal_transitions(journal: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(journal) as conn:
        return sorted(conn.execute("SELECT task_id, state, at, reason, remote_ref FROM transitions"))


async def test_a_journals_tasks_leases_and_drains_are_served_and_run_from_postgresql(database: Database) -> None:
    single = config(RESOURCES)
    journal = single.journal.path
    async with running(single) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid, \
            grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        lease = await qrmid.acquire("noop", slurm_job_id="42", ttl_seconds=3600)
        done = [await qrmid.start_task("noop", PAYLOAD, request_id=f"r{i}", lease_token=lease.token) for i in range(3)]
        before = {task.id: (await qrmid.wait(task.id), await qrmid.result(task.id)) for task in done}
        await admin_pb2_grpc.AdminServiceStub(channel).DrainResource(
            admin_pb2.DrainResourceRequest(resource="other", reason="firmware 14:00-16:00"))
        start, end = Timestamp(seconds=int(time.time()) + 3600), Timestamp(seconds=int(time.time()) + 7200)
        window = await admin_pb2_grpc.AdminServiceStub(channel).CreateWindow(admin_pb2.CreateWindowRequest(
            window=pb.Window(resource="noop", kind="reservation", start_time=start, end_time=end, users=["alice"])))
        await admin_pb2_grpc.AdminServiceStub(channel).SetAllocation(admin_pb2.SetAllocationRequest(
            allocation=pb.Allocation(account="physics", resources=["noop"], qpu_seconds=3600, period="month")))
        waiting = await qrmid.start_task("other", PAYLOAD, request_id="rq")
        assert (await qrmid.task(waiting.id)).state == pb.TASK_STATE_QUEUED
    transitions = journal_transitions(journal)
    with sqlite3.connect(journal) as conn:
        refs = sorted(conn.execute("SELECT id, remote_ref, released = 1 FROM tasks WHERE remote_ref IS NOT NULL"))

    moved = import_journal(journal, database, "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout) == {
        "tasks": 4, "tasks_by_state": {"completed": 3, "queued": 1}, "transitions": len(transitions), "results": 3,
        "request_ids": 4, "remote_refs": 3, "leases": 1, "drains": 1, "windows": 1, "allocations": 1,
        "quarantined": []}
    with database.connect() as conn:
        assert sorted(conn.execute("SELECT * FROM transitions")) == transitions, "copied as the journal recorded"
        assert sorted(conn.execute("SELECT task_id, remote_ref, released FROM remote_refs")) == refs

    member = config(RESOURCES, cluster=cluster(database))
    async with running(member) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid, \
            grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        for task_id, (final, result) in before.items():
            after = await qrmid.task(task_id)
            assert (after.state, after.slurm_job_id, after.lease_id) == (pb.TASK_STATE_COMPLETED, "42", lease.id)
            assert (after.create_time, after.start_time, after.end_time) == \
                (final.create_time, final.start_time, final.end_time)
            assert await qrmid.result(task_id) == result
        again = await qrmid.start_task("noop", PAYLOAD, request_id="r1", lease_token=lease.token)
        assert again.id == done[1].id, "a retried request id returns the task the single daemon made"
        assert (await qrmid.start_task("other", PAYLOAD, request_id="rq")).id == waiting.id
        assert [held.id for held in await qrmid.list_leases("noop")] == [lease.id]
        assert [(w.id, list(w.users), w.start_time, w.end_time) for w in (await admin_pb2_grpc.AdminServiceStub(
            channel).ListWindows(admin_pb2.ListWindowsRequest())).windows] == [(window.id, ["alice"], start, end)]
        assert [(a.account, list(a.resources), a.qpu_seconds) for a in (await admin_pb2_grpc.AdminServiceStub(
            channel).ListAllocations(admin_pb2.ListAllocationsRequest())).allocations] == [("physics", ["noop"], 3600)]
        drained = await qrmid.resource("other")
        assert (drained.status, drained.status_reason) == (pb.RESOURCE_STATUS_DRAINING, "firmware 14:00-16:00")
        await asyncio.sleep(0.3)
        assert (await qrmid.task(waiting.id)).state == pb.TASK_STATE_QUEUED, "still held by the drain"
        await admin_pb2_grpc.AdminServiceStub(channel).ResumeResource(admin_pb2.ResumeResourceRequest(resource="other"))
        assert (await qrmid.wait(waiting.id)).state == pb.TASK_STATE_COMPLETED
        assert waiting.id.encode() in await qrmid.result(waiting.id)

    again = import_journal(journal, database)
    assert again.returncode == 1
    assert "already holds 4 of its tasks and 1 of its leases" in again.stderr and "Nothing was imported" in \
        again.stderr, again.stderr
    assert database.password not in again.stderr + again.stdout


async def test_the_journal_of_a_running_daemon_is_refused_and_nothing_is_imported(database: Database) -> None:
    single = config(RESOURCES)
    async with running(single) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        await qrmid.wait((await qrmid.start_task("noop", PAYLOAD)).id)
        refused = await asyncio.to_thread(import_journal, single.journal.path, database)
    assert refused.returncode == 1
    assert f"the journal {single.journal.path} is in use by a running qrmid: stop that daemon" in refused.stderr, \
        refused.stderr
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'tasks'").fetchone() \
            == (0,), "the database is not touched"
    moved = import_journal(single.journal.path, database)
    assert moved.returncode == 0 and moved.stdout.startswith("imported 1 task(s) (1 completed)"), moved.stderr


def test_a_config_without_a_cluster_section_is_refused() -> None:
    cfg = write_config(short_dir() / "single.toml", "[journal]\nenabled = true\n")
    run = subprocess.run([sys.executable, "-m", "qrmid", "cluster", "import-journal", str(short_dir() / "j.db"),
                          "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "has no [cluster] section" in run.stderr, run.stderr


async def test_a_database_a_member_uses_is_refused(database: Database) -> None:
    single = config(RESOURCES)
    async with running(single) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        await qrmid.wait((await qrmid.start_task("noop", PAYLOAD)).id)
    async with running(config(RESOURCES, cluster=cluster(database))):
        refused = await asyncio.to_thread(import_journal, single.journal.path, database)
    assert refused.returncode == 1
    assert "is in use by qrmid member node-a: stop the members using it, then import" in refused.stderr, refused.stderr
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


async def test_quarantined_journal_rows_are_reported_not_moved(database: Database) -> None:
    single = config(RESOURCES)
    async with running(single) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        tasks = [await qrmid.start_task("noop", PAYLOAD) for _ in range(3)]
        for task in tasks:
            await qrmid.wait(task.id)
    with sqlite3.connect(single.journal.path) as conn:
        conn.execute("UPDATE tasks SET state = 'exploded' WHERE id = ?", (tasks[1].id,))
    moved = import_journal(single.journal.path, database)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith("imported 2 task(s) (2 completed)"), moved.stdout
    assert f"not imported: quarantined row 2 of table tasks ({tasks[1].id}): column state is 'exploded', not a " \
           "task state" in moved.stderr, moved.stderr
    with database.connect() as conn:
        assert {row[0] for row in conn.execute("SELECT id FROM tasks")} == {tasks[0].id, tasks[2].id}
        assert conn.execute("SELECT count(*) FROM transitions WHERE task_id = %s", (tasks[1].id,)).fetchone() == (0,)


async def test_an_unreachable_database_is_named_without_its_password_and_the_journal_is_unchanged(
        database: Database) -> None:
    single = config(RESOURCES)
    async with running(single) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        await qrmid.wait((await qrmid.start_task("noop", PAYLOAD)).id)
    before = journal_transitions(single.journal.path)
    gone = Database(database.server, f"host=127.0.0.1 port={free_port()} dbname=qrmid user=qrmid", database.password)
    refused = import_journal(single.journal.path, gone)
    assert refused.returncode == 1
    assert f"cannot import into PostgreSQL at {gone.dsn}: connection failed" in refused.stderr, refused.stderr
    assert "nothing was imported" in refused.stderr and gone.password not in refused.stderr + refused.stdout
    assert journal_transitions(single.journal.path) == before
    moved = import_journal(single.journal.path, database)
    assert moved.returncode == 0, moved.stderr
