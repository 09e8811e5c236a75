"""The PostgreSQL store (``[cluster]``) against a real PostgreSQL server: schema created, upgraded and refused when
newer; tasks, results, request ids and leases kept across restarts and a ``kill -9``; PostgreSQL lost while serving
and down at start; the password never shown."""

from __future__ import annotations

import asyncio
import base64
import getpass
import json
import logging
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from daemons import ROOT, config, running, short_dir, write_config
from ibm_services import Services
from postgres import Database, PostgresServer
from test_ibm_quantum_system import isa_bell
from test_local_simulators import heavy_circuit, sampler
from test_recovery import ibm_resource, perth, ran_once_and_released

from qrmid.backends.payloads import PulserSequence
from qrmid.bench.process import QrmidProcess
from qrmid.cli import main
from qrmid.client import AsyncClient, pulser_payload
from qrmid.core.leases import Lease
from qrmid.core.tasks import Result, Task, TaskState
from qrmid.daemon import StartupError
from qrmid.ops.config import Config, ConfigError, load
from qrmid.store import schema
from qrmid.store.members import Members
from qrmid.store.postgres import PostgresStore
from qrmid.v1 import admin_pb2, admin_pb2_grpc, metrics_pb2, metrics_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

NOOP = [{"type": "noop", "name": "noop", "slots": 4}]
PAYLOAD = pulser_payload({"sequence": "x"}, 3)
TABLES = {"tasks", "transitions", "request_ids", "remote_refs", "results", "leases", "drains", "usage", "members",
          "resource_epoch", "quarantine"}


def password_file(db: Database) -> Path:
    path = short_dir() / "pgpass"
    path.touch(mode=0o600)
    path.write_text(db.password + "\n")
    return path


def cluster(db: Database, member: str = "node-a") -> dict[str, object]:
    return {"dsn": db.dsn, "password_file": str(password_file(db)), "member": member, "connect_timeout_seconds": 2}


def cluster_config(db: Database, resources: list[dict[str, object]] | None = None) -> Config:
    return config(NOOP if resources is None else resources, cluster=cluster(db))


def tables(db: Database) -> set[str]:
    with db.connect() as conn:
        return {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}


def applied(db: Database) -> list[str]:
    with db.connect() as conn:
        return [row[0] for row in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY applied_at_utc")]


def conninfo(db: Database) -> str:
    return f"{db.dsn} password={db.password}"


# -- the schema ---------------------------------------------------------------------------------------------------


async def test_a_daemon_creates_the_schema_and_records_its_member(database: Database) -> None:
    async with running(cluster_config(database)):
        pass
    assert TABLES <= tables(database)
    assert applied(database) == [migration.id for migration in schema.migrations()]
    with database.connect() as conn:
        assert [row[0] for row in conn.execute("SELECT name FROM members")] == ["node-a"]


async def test_a_daemon_upgrades_a_schema_of_the_first_migration_and_keeps_its_tasks(database: Database) -> None:
    shipped = schema.migrations()
    assert len(shipped) >= 2
    schema.migrate(conninfo(database), shipped[:1])  # the database as the first version left it
    assert applied(database) == [shipped[0].id] and "members" not in tables(database)
    with database.connect() as conn:
        conn.execute("INSERT INTO tasks (id, resource, owner, payload_kind, payload, shots, lease_id, slurm_job_id, "
                     "client_request_id, state, created_at, ended_at) VALUES ('old', 'noop', 'root', "
                     "'pulser_sequence', %s, 3, '', '', 'r-old', 'completed', %s, %s)",
                     (b'{"sequence": "x", "job_runs": 3}', time.time() - 2, time.time() - 1))
        conn.execute("INSERT INTO request_ids VALUES ('root', 'r-old', 'old')")
    async with running(cluster_config(database)) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        assert (await qrmid.task("old")).state == pb.TASK_STATE_COMPLETED
        assert (await qrmid.start_task("noop", PAYLOAD, request_id="r-old")).id == "old"
    assert applied(database) == [migration.id for migration in shipped]
    assert TABLES <= tables(database)


async def test_a_schema_newer_than_the_daemon_knows_is_refused(database: Database, tmp_path: Path) -> None:
    for migration in schema.MIGRATIONS.glob("*.sql"):
        shutil.copy(migration, tmp_path)
    (tmp_path / "9999.from-the-future.sql").write_text("CREATE TABLE future (id INTEGER);\n")
    schema.migrate(conninfo(database), schema.migrations(tmp_path))
    with pytest.raises(StartupError) as error:
        async with running(cluster_config(database)):
            pass
    message = str(error.value)
    assert "schema is newer than this qrmid knows" in message and "run the newer qrmid" in message, message
    assert database.dsn in message and database.password not in message


async def test_a_member_stops_even_when_one_of_its_loops_swallows_a_cancel(database: Database,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """On Python 3.11 a library's timed wait (the connection pool's) can swallow a cancel: the loop runs on, as the
    notices loop of a member whose stop once never ended did. The member cancels again until its loops end."""
    applying = Members._apply_loop
    swallowed = asyncio.Event()

    async def runs_on(self: Members) -> None:
        try:
            await applying(self)
        except asyncio.CancelledError:
            swallowed.set()
        await applying(self)

    monkeypatch.setattr(Members, "_apply_loop", runs_on)
    async with asyncio.timeout(60):
        async with running(cluster_config(database)) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
            task = await qrmid.start_task("noop", PAYLOAD)
            assert (await qrmid.wait(task.id)).state == pb.TASK_STATE_COMPLETED
    assert swallowed.is_set(), "the first cancel reached the loop, which ran on"


# -- what a restart keeps -----------------------------------------------------------------------------------------


async def test_a_daemon_in_cluster_mode_starts_where_no_journal_made_the_state_directory(database: Database) -> None:
    state = short_dir() / "state" / "qrmid"  # the journal would have made it; the payload spool goes there
    cfg = config(NOOP, cluster=cluster(database), journal={"path": str(state / "journal.db")})
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        task = await qrmid.start_task("noop", PAYLOAD)
        assert (await qrmid.wait(task.id)).state == pb.TASK_STATE_COMPLETED
    assert not (state / "journal.db").exists(), "the store is PostgreSQL, not the journal"


async def test_tasks_results_request_ids_leases_and_accounting_survive_a_restart(database: Database) -> None:
    cfg = cluster_config(database)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        lease = await qrmid.acquire("noop", slurm_job_id="42", ttl_seconds=3600)
        tasks = [await qrmid.start_task("noop", PAYLOAD, request_id=f"r{i}", lease_token=lease.token)
                 for i in range(5)]
        before = {task.id: (await qrmid.wait(task.id), await qrmid.result(task.id)) for task in tasks}
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        for task_id, (final, result) in before.items():
            after = await qrmid.task(task_id)
            assert after.state == pb.TASK_STATE_COMPLETED and after.slurm_job_id == "42"
            assert after.create_time == final.create_time and after.end_time == final.end_time
            assert await qrmid.result(task_id) == result
        again = await qrmid.start_task("noop", PAYLOAD, request_id="r3", lease_token=lease.token)
        assert again.id == tasks[3].id, "a retried request id returns the task made before the restart"
        assert [held.id for held in await qrmid.list_leases("noop")] == [lease.id]
        async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            accounting = await metrics_pb2_grpc.MetricsServiceStub(channel).ListAccounting(
                metrics_pb2.ListAccountingRequest())
        assert {record.task_id for record in accounting.records} == set(before)
        await qrmid.release(lease.token)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        assert await qrmid.list_leases("noop") == [], "a released lease stays released"
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM usage WHERE state = 'completed'").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM request_ids").fetchone() == (5,)


async def test_unreadable_task_rows_are_quarantined_listed_and_the_daemon_serves_the_rest(
        database: Database, caplog: pytest.LogCaptureFixture) -> None:
    cfg = cluster_config(database)
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        tasks = [await qrmid.start_task("noop", PAYLOAD, request_id=f"r{i}") for i in range(4)]
        for task in tasks:
            await qrmid.wait(task.id)
    broken = {tasks[0].id: ("state", "exploded"), tasks[1].id: ("payload", b"{not json"),
              tasks[2].id: ("payload_kind", "quantum_annealer")}
    with database.connect() as conn:
        for task_id, (column, value) in broken.items():
            conn.execute(f"UPDATE tasks SET {column} = %s WHERE id = %s", (value, task_id))
        seqs = dict(conn.execute("SELECT id, seq FROM tasks").fetchall())

    caplog.set_level(logging.ERROR, logger="qrmid.store.postgres")
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        for task_id in broken:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await qrmid.task(task_id)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await qrmid.task(tasks[3].id)).state == pb.TASK_STATE_COMPLETED, "readable rows are restored"
        assert (await qrmid.start_task("noop", PAYLOAD, request_id="r3")).id == tasks[3].id
        async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            listed = await admin_pb2_grpc.AdminServiceStub(channel).ListQuarantine(admin_pb2.ListQuarantineRequest())
        cli = await asyncio.to_thread(CliRunner().invoke, main,
                                      ["--address", f"unix:{daemon.socket}", "admin", "quarantine", "--json"])
    assert listed.journal == database.dsn and database.password not in str(listed)
    rows = {row.key: row for row in listed.rows}
    assert set(rows) == set(broken), "every id in full"
    assert rows[tasks[0].id].reason == "column state is 'exploded', not a task state"
    assert rows[tasks[1].id].reason.startswith("the payload is not JSON")
    assert rows[tasks[2].id].reason == "unknown payload kind 'quantum_annealer'"
    for task_id in broken:
        assert (rows[task_id].source, rows[task_id].row_id) == ("tasks", seqs[task_id])
        logged = [r.getMessage() for r in caplog.records if task_id in r.getMessage()]
        assert logged == [(f"PostgreSQL at {database.dsn}: row {seqs[task_id]} of table tasks ({task_id}) cannot be "
                           f"read: {rows[task_id].reason}; it was moved to the quarantine table and start-up goes on "
                           "(`qrmid admin quarantine` lists it)")]
    assert cli.exit_code == 0, cli.output
    printed = json.loads(cli.output)
    assert printed["journal"] == database.dsn
    assert {(row["source"], row["key"], row["reason"]) for row in printed["rows"]} == \
        {("tasks", task_id, row.reason) for task_id, row in rows.items()}

    with database.connect() as conn:
        assert [row[0] for row in conn.execute("SELECT id FROM tasks")] == [tasks[3].id], "moved, not copied"
        assert conn.execute("SELECT count(*) FROM transitions WHERE task_id <> %s", (tasks[3].id,)).fetchone() == (0,)
        raw = json.loads(conn.execute("SELECT raw FROM quarantine WHERE key = %s", (tasks[0].id,)).fetchone()[0])
        assert (raw["id"], raw["state"], raw["owner"]) == (tasks[0].id, "exploded", getpass.getuser())
        raw = json.loads(conn.execute("SELECT raw FROM quarantine WHERE key = %s", (tasks[1].id,)).fetchone()[0])
        assert base64.b64decode(raw["payload"]["base64"]) == b"{not json", "the raw row is kept as it was"
    caplog.clear()
    async with running(cfg) as daemon:  # quarantined once: the next start is clean, the listing stays
        assert daemon.journal is not None and len(daemon.journal.quarantined) == 3
    assert not caplog.records


async def test_an_admins_drain_and_resume_survive_restarts(database: Database) -> None:
    cfg = config([*NOOP, {"type": "noop", "name": "other", "slots": 1}], cluster=cluster(database))
    async with running(cfg) as daemon, grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await admin.DrainResource(admin_pb2.DrainResourceRequest(resource="noop", reason="firmware 14:00-16:00"))
        await admin.DrainResource(admin_pb2.DrainResourceRequest(resource="other", reason="short break"))
        await admin.ResumeResource(admin_pb2.ResumeResourceRequest(resource="other"))
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid, \
            grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        drained = await qrmid.resource("noop")
        assert (drained.status, drained.status_reason) == (pb.RESOURCE_STATUS_DRAINING, "firmware 14:00-16:00")
        assert (await qrmid.resource("other")).status == pb.RESOURCE_STATUS_ONLINE
        held = await qrmid.start_task("noop", PAYLOAD)
        await asyncio.sleep(0.3)
        assert (await qrmid.task(held.id)).state == pb.TASK_STATE_QUEUED, "its queue waits"
        await admin_pb2_grpc.AdminServiceStub(channel).ResumeResource(admin_pb2.ResumeResourceRequest(resource="noop"))
        assert (await qrmid.wait(held.id)).state == pb.TASK_STATE_COMPLETED
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        assert (await qrmid.resource("noop")).status == pb.RESOURCE_STATUS_ONLINE, "the resume is kept too"


async def test_a_task_postgresql_refuses_to_store_is_refused_alone(database: Database) -> None:
    async with running(cluster_config(database)) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        with pytest.raises(grpc.RpcError) as error:  # PostgreSQL text cannot hold a NUL character
            await qrmid.start_task("noop", PAYLOAD, request_id="bad\x00id")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot record task" in error.value.details(), error.value.details()
        fine = await qrmid.start_task("noop", PAYLOAD, request_id="good")
        assert (await qrmid.wait(fine.id)).state == pb.TASK_STATE_COMPLETED, "the store goes on writing"
    with database.connect() as conn:
        assert conn.execute("SELECT client_request_id FROM tasks").fetchall() == [("good",)]


async def test_retention_drops_old_tasks_then_the_oldest_past_the_result_size_cap(database: Database) -> None:
    store = PostgresStore(database.dsn, member="node-a", password_file=password_file(database),
                          retain_seconds=3600, max_result_bytes=10, cleanup_interval=0)
    await asyncio.to_thread(store.open)
    with database.connect() as conn:  # as an election leaves it: only the dispatcher writes a task's run
        conn.execute("INSERT INTO resource_epoch (resource, dispatcher, epoch) VALUES ('noop', 'node-a', 1)")
    store.dispatching("noop", 1)
    store.start()
    try:
        tasks = [Task(resource="noop", owner="alice", payload=PulserSequence('{"x": 1}', 3)) for _ in range(4)]
        for task in tasks:
            store.task_queued(task)
            task.transition(TaskState.RUNNING)
            task.result = Result(b"123456", "application/json")
            task.transition(TaskState.COMPLETED)
            store.task_changed(task)
        await store.durable()
        with database.connect() as conn:  # the first ended two hours ago; the others in this order, just now
            for age, task in zip((7200, 3, 2, 1), tasks, strict=True):
                conn.execute("UPDATE tasks SET ended_at = %s WHERE id = %s", (time.time() - age, task.id))
                conn.execute("UPDATE usage SET ended_at = %s WHERE task_id = %s", (time.time() - age, task.id))
        store.lease_ended(Lease(resource="noop", owner="alice", expires_at=0), "")  # a write: the tidy-up follows
        await store.durable()
        store.lease_ended(Lease(resource="noop", owner="alice", expires_at=0), "")  # committed after it
        await store.durable()
    finally:
        await asyncio.to_thread(store.close)
    with database.connect() as conn:
        kept = {row[0] for row in conn.execute("SELECT id FROM tasks")}
        assert kept == {tasks[3].id}, "older than the age dropped, then the oldest until 10 bytes of results fit"
        assert {row[0] for row in conn.execute("SELECT task_id FROM results")} == kept
        assert {row[0] for row in conn.execute("SELECT DISTINCT task_id FROM transitions")} == kept
        assert {row[0] for row in conn.execute("SELECT task_id FROM usage")} == {task.id for task in tasks[1:]}, \
            "accounting records go by age only"


async def test_writes_of_a_dispatch_that_ended_are_left_out_and_their_tasks_named(database: Database) -> None:
    store = PostgresStore(database.dsn, member="node-a", password_file=password_file(database))
    await asyncio.to_thread(store.open)
    with database.connect() as conn:  # as an election leaves it: only the dispatcher writes a task's run
        conn.execute("INSERT INTO resource_epoch (resource, dispatcher, epoch) VALUES ('noop', 'node-a', 1)")
    store.dispatching("noop", 1)
    store.start()
    dropped: list[str] = []
    store.on_dropped = dropped.extend
    try:
        task = Task(resource="noop", owner="alice", payload=PulserSequence('{"x": 1}', 3))
        store.task_queued(task)
        await store.durable()
        task.transition(TaskState.RUNNING)
        task.transition(TaskState.COMPLETED)
        store.task_changed(task)  # written in epoch 1, committed after this member stopped dispatching
        store.dispatching("noop", None)
        with database.connect() as conn:  # elected again meanwhile (the writer is idle: no lock is held)
            conn.execute("UPDATE resource_epoch SET epoch = 2 WHERE resource = 'noop'")
        await store.durable()
    finally:
        await asyncio.to_thread(store.close)
    assert dropped == [task.id], "the member learns which tasks' states the store does not hold"
    with database.connect() as conn:
        assert conn.execute("SELECT state, ended_at FROM tasks WHERE id = %s", (task.id,)).fetchone() == \
            ("queued", None)


class Member(QrmidProcess):
    """``qrmid serve`` with ``[cluster]`` in its own process, restartable, killable with SIGKILL; its log output
    (at debug level) collected in one file across runs."""

    output: Path

    def __init__(self, db: Database, resources: str) -> None:
        scratch = short_dir()
        socket = scratch / "qrmid.sock"
        text = (f'[daemon]\nsocket = "{socket}"\nshutdown_grace_seconds = 2\nlog_level = "debug"\n'
                f'[journal]\npath = "{scratch / "journal.db"}"\n'  # the payload spool sits beside it
                f'[cluster]\ndsn = "{db.dsn}"\npassword_file = "{password_file(db)}"\nmember = "node-a"\n'
                f'[limits]\ncalls_per_second = 0\nstreams_per_client = 0\n{resources}')
        super().__init__(write_config(scratch / "qrmid.toml", text), socket, cwd=ROOT, output=scratch / "output.log")


async def test_kill_9_mid_run_then_restart_runs_every_local_qiskit_task_exactly_once(database: Database) -> None:
    member = Member(database, '[[resources]]\ntype = "local-qiskit"\nname = "local-qiskit"\nslots = 2\n')
    payload = sampler(heavy_circuit(18, 30), shots=64)
    count = 10
    try:
        member.start()
        async with AsyncClient(member.address) as qrmid:
            ids = [(await qrmid.start_task("local-qiskit", payload, request_id=f"job-{n}")).id for n in range(count)]
            while True:  # some finished, some running: then crash
                now = [await qrmid.task(task_id) for task_id in ids]
                states = [task.state for task in now]
                if states.count(pb.TASK_STATE_COMPLETED) >= 2 and pb.TASK_STATE_RUNNING in states:
                    break
                await asyncio.sleep(0.05)
        member.kill()
        with database.connect() as conn:  # a completion is shown before it is committed: the database's count
            done = dict(conn.execute("SELECT id, ended_at FROM tasks WHERE state = 'completed'").fetchall())
        assert len(done) < count, "tasks were still to run when the daemon died"
        member.start()
        async with AsyncClient(member.address, timeout=600) as qrmid:
            retried = [(await qrmid.start_task("local-qiskit", payload, request_id=f"job-{n}")).id
                       for n in range(count)]
            assert retried == ids, "a retried request id returns the task made before the crash"
            finished = await asyncio.gather(*(qrmid.wait(task_id) for task_id in ids))
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * count, \
            [task.reason for task in finished if task.state != pb.TASK_STATE_COMPLETED]
        with database.connect() as conn:
            ended = dict(conn.execute("SELECT id, ended_at FROM tasks WHERE id = ANY(%s)", (list(done),)).fetchall())
            assert ended == done, "a task whose end was committed is not run again"
            rows = conn.execute("SELECT task_id, count(*) FROM transitions WHERE state = 'completed' "
                                "GROUP BY task_id").fetchall()
            assert dict(rows) == dict.fromkeys(ids, 1), "every task completed exactly once"
            assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (count,)
    finally:
        member.stop()
    assert database.password not in member.output.read_text(), "the password never appears in the logs"


@pytest.fixture(scope="module")
def ibm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with perth(tmp_path_factory.mktemp("ibm")) as services:
        yield services


async def test_kill_9_mid_run_then_restart_runs_every_ibm_task_exactly_once(database: Database,
                                                                            ibm: Services) -> None:
    member = Member(database, ibm_resource(ibm))
    payload = isa_bell(shots=20)
    count = 60
    try:
        member.start()
        async with AsyncClient(member.address) as qrmid:
            ids = [(await qrmid.start_task("perth", payload, request_id=f"job-{n}")).id for n in range(count)]
            while True:  # some finished, some on the backend: then crash
                states = [(await qrmid.task(task_id)).state for task_id in ids]
                if states.count(pb.TASK_STATE_COMPLETED) >= 10 and pb.TASK_STATE_RUNNING in states:
                    break
                await asyncio.sleep(0.1)
        member.kill()
        assert states.count(pb.TASK_STATE_QUEUED) > 10, "tasks were still queued when the daemon died"
        member.start()
        async with AsyncClient(member.address, timeout=600) as qrmid:
            retried = [(await qrmid.start_task("perth", payload, request_id=f"job-{n}")).id for n in range(count)]
            assert retried == ids, "a retried request id returns the task made before the crash"
            finished = await asyncio.gather(*(qrmid.wait(task_id) for task_id in ids))
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * count, \
            [task.reason for task in finished if task.state != pb.TASK_STATE_COMPLETED]
        await ran_once_and_released(ibm, ids)
    finally:
        member.stop()
    with database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM remote_refs WHERE released").fetchone() == (count,)
    assert database.password not in member.output.read_text()


# -- PostgreSQL lost and down -------------------------------------------------------------------------------------


async def test_postgresql_lost_while_serving_answers_unavailable_then_serves_again_on_its_own(
        database: Database, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    async with running(cluster_config(database)) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        first = await qrmid.start_task("noop", PAYLOAD, request_id="before")
        assert (await qrmid.wait(first.id)).state == pb.TASK_STATE_COMPLETED
        postgres_server.stop()
        with pytest.raises(grpc.RpcError) as error:
            await qrmid.start_task("noop", PAYLOAD, request_id="during")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "PostgreSQL at" in error.value.details() and database.dsn in error.value.details()
        assert (await qrmid.task(first.id)).state == pb.TASK_STATE_COMPLETED, "the daemon keeps answering reads"
        with pytest.raises(grpc.RpcError) as again:  # at once, without waiting for a commit
            await qrmid.start_task("noop", PAYLOAD)
        assert again.value.code() == grpc.StatusCode.UNAVAILABLE and "cannot be written" in again.value.details()
        postgres_server.start()
        for _ in range(300):  # the pool reconnects on its own
            try:
                after = await qrmid.start_task("noop", PAYLOAD, request_id="after")
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the daemon did not take tasks again after PostgreSQL came back")
        assert (await qrmid.wait(after.id)).state == pb.TASK_STATE_COMPLETED
    async with running(cluster_config(database)) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
        assert (await qrmid.task(after.id)).state == pb.TASK_STATE_COMPLETED, "committed once it came back"
    with database.connect() as conn:
        states = dict(conn.execute("SELECT client_request_id, state FROM tasks").fetchall())
    assert states["before"] == states["after"] == "completed"
    assert states.get("during", "cancelled") == "cancelled", "a task refused UNAVAILABLE never runs"
    assert database.password not in caplog.text


def test_postgresql_down_at_start_names_the_dsn_without_the_password(database: Database) -> None:
    with socket.socket() as closed:  # bound, never listening: connections to its port are refused
        closed.bind(("127.0.0.1", 0))
        dsn = f"host=127.0.0.1 port={closed.getsockname()[1]} dbname=qrmid user=qrmid"
        scratch = short_dir()
        cfg = write_config(scratch / "qrmid.toml", f'[daemon]\nsocket = "{scratch / "qrmid.sock"}"\n'
                           f'[journal]\npath = "{scratch / "journal.db"}"\n'
                           f'[cluster]\ndsn = "{dsn}"\npassword_file = "{password_file(database)}"\n')
        done = subprocess.run([sys.executable, "-m", "qrmid", "serve", "--config", str(cfg)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"cannot use PostgreSQL at {dsn}: " in done.stderr, done.stderr
    assert "Connection refused" in done.stderr and "check [cluster] dsn" in done.stderr, done.stderr
    assert database.password not in done.stderr + done.stdout


# -- config --------------------------------------------------------------------------------------------------------


def test_a_password_in_the_dsn_is_refused_without_being_shown(tmp_path: Path) -> None:
    path = write_config(tmp_path / "qrmid.toml", '[cluster]\ndsn = "host=db1 user=qrmid password=hunter2-secret"\n')
    with pytest.raises(ConfigError) as error:
        load(path)
    assert "key 'cluster.dsn': must not hold the password" in str(error.value)
    assert "hunter2-secret" not in str(error.value)
    path.write_text('[cluster]\ndsn = "host=db1 hunter2-secret"\n')
    with pytest.raises(ConfigError) as error:
        load(path)
    assert "not a libpq connection string" in str(error.value) and "hunter2-secret" not in str(error.value)


async def test_a_password_file_open_to_others_is_refused(database: Database) -> None:
    settings = cluster(database)
    Path(str(settings["password_file"])).chmod(0o644)
    with pytest.raises(StartupError) as error:
        async with running(config(NOOP, cluster=settings)):
            pass
    assert "has mode 0644" in str(error.value) and "chmod 600" in str(error.value)
