"""The PostgreSQL store: the journal's record of tasks, leases, results and usage, kept in a PostgreSQL database
that several qrmid members of a site can share (cluster mode).

It has the journal's interface (``open`` → ``Recovered``, ``start``, ``close``, ``writable``, ``durable`` and the
core's events) and its promise: callers on the event loop only enqueue writes; one writer task on the loop commits
whatever has piled up in one transaction, pipelined (group commit); ``durable()`` returns once everything enqueued
so far is committed. When PostgreSQL is lost the writer keeps the pending writes (a transaction commits whole or not
at all), reports the reason (``writable()`` and ``durable()`` raise Unavailable) and retries while the connection
pool reconnects on its own. A write PostgreSQL refuses for its values is left out on its own: the rest of its batch
commits, and whoever waits for that task's record gets Unavailable.

The password never leaves this module: it is read from a private file (or left to libpq's passfile), and every
message shows the DSN without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from qrmid.backends.base import BackendStatus
from qrmid.core.allocations import Allocation, Used
from qrmid.core.events import Listener
from qrmid.core.leases import Lease
from qrmid.core.tasks import Task
from qrmid.core.usage import shots_used
from qrmid.core.windows import Window
from qrmid.ops.private_files import exposed
from qrmid.store import codec, schema
from qrmid.store.commits import MAX_BATCH, MAX_RETRY_SECONDS, Commits
from qrmid.store.journal import (
    SUBMITTING,
    Quarantined,
    Recovered,
    allocation_row,
    log_quarantined,
    raw_row,
    read_allocation,
    read_lease,
    read_task,
    read_used_day,
    read_window,
    why_unreadable,
    window_row,
)

log = logging.getLogger(__name__)

POOL_SIZE = 4  # connections: the writer's, and reads by the cluster link and the admin calls
MEMBER_LOCK = 0x71726D69_64000001  # held shared by every member using the database; an import takes it exclusive

INSERT_TASK = """INSERT INTO tasks (id, resource, owner, account, priority, payload_kind, payload, shots, lease_id,
    slurm_job_id, client_request_id, state, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (id) DO NOTHING"""
INSERT_REQUEST = """INSERT INTO request_ids (owner, client_request_id, task_id) SELECT %(owner)s, %(request)s, %(task)s
    WHERE NOT EXISTS (SELECT 1 FROM request_ids WHERE owner = %(owner)s AND client_request_id = %(request)s
    AND task_id = %(task)s)"""  # again for its task: nothing; for another task (another member took it): refused
INSERT_TRANSITION = "INSERT INTO transitions VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
UPDATE_TASK = """UPDATE tasks SET state = %s, started_at = %s, ended_at = %s, reason = %s,
    payload = coalesce(%s, payload) WHERE id = %s"""
SET_REF = """INSERT INTO remote_refs (task_id, remote_ref) VALUES (%s, %s)
    ON CONFLICT (task_id) DO UPDATE SET remote_ref = excluded.remote_ref"""
SET_RESULT = """INSERT INTO results (task_id, data, content_type, bytes, logs) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (task_id) DO UPDATE SET data = excluded.data, content_type = excluded.content_type,
    bytes = excluded.bytes, logs = excluded.logs"""
INSERT_USAGE = """INSERT INTO usage (task_id, resource, owner, account, slurm_job_id, lease_id, state, created_at,
    started_at, ended_at, shots) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"""
UPSERT_LEASE = """INSERT INTO leases (id, token, resource, owner, slurm_job_id, created_at, expires_at, account, mode,
    min_slots) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET token = excluded.token,
    resource = excluded.resource, owner = excluded.owner, slurm_job_id = excluded.slurm_job_id,
    created_at = excluded.created_at, expires_at = excluded.expires_at, account = excluded.account,
    mode = excluded.mode, min_slots = excluded.min_slots"""
LEASE_COLUMNS = "id, token, resource, owner, slurm_job_id, created_at, expires_at, account, mode, min_slots"
FORGET_WAITS = "DELETE FROM exclusive_waits WHERE member = %s OR until <= %s"  # its waiters ended with its last run
MEMBER_STARTED = """INSERT INTO members (name) VALUES (%s)
    ON CONFLICT (name) DO UPDATE SET started_at = now(), heartbeat = now(), handover = false"""
HOLDER = r"""SELECT coalesce(nullif(regexp_replace(a.application_name, '^qrmid (\S+) \S+$', 'qrmid member \1'), ''),
    'a session of PID ' || l.pid) FROM pg_locks l
    JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s
    AND l.objid::bigint = %s AND l.objsubid = 1"""
READ_TASKS = """SELECT t.*, r.remote_ref, coalesce(r.released, false) AS released, s.data AS result,
    s.content_type AS result_type, coalesce(s.logs, '') AS logs
    FROM tasks t LEFT JOIN remote_refs r ON r.task_id = t.id LEFT JOIN results s ON s.task_id = t.id"""
PUBLISH = """INSERT INTO resource_state (resource, state, reason, slots, target, at) VALUES (%s, %s, %s, %s,
    coalesce(%s, (SELECT target FROM resource_state WHERE resource = %s)), %s) ON CONFLICT (resource) DO UPDATE SET
    state = excluded.state, reason = excluded.reason, slots = excluded.slots, target = excluded.target, at = excluded.at"""
EPOCHS = "SELECT resource, epoch FROM resource_epoch WHERE resource = ANY(%s) FOR SHARE"
WINDOW_COLUMNS = "id, resource, kind, start_at, end_at, users, accounts, groups_, reason"
INSERT_WINDOW = f"INSERT INTO windows ({WINDOW_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
ALLOCATION_COLUMNS = "account, resources, limit_kind, qpu_seconds, shots, period"
ROLL_UP = """INSERT INTO usage_days (account, resource, day, qpu_seconds, shots) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (account, resource, day) DO UPDATE SET qpu_seconds = usage_days.qpu_seconds + excluded.qpu_seconds,
    shots = usage_days.shots + excluded.shots"""
CHANNEL = "qrmid"  # the LISTEN/NOTIFY channel of the members: 't:' task id, 'l:' lease id, 'd:' resource, ...
NOTIFY = "SELECT pg_notify('qrmid', %s)"


Fenced = dict[tuple[str, int], list[str]]  # (resource, epoch) -> ids of the tasks whose writes were left out


class Write(NamedTuple):
    """One write: SQL and its parameters; the task it records ('' for none); the (resource, epoch) of this member's
    dispatch it belongs to, checked in its transaction (None: not a dispatch write); what to notify members of."""

    sql: str
    params: tuple[Any, ...] | dict[str, Any]
    task_id: str = ""
    fence: tuple[str, int] | None = None
    notice: str = ""


class StoreError(Exception):
    """The store cannot be opened; the message says why and what to do (and never holds the password)."""


def safe_dsn(dsn: str) -> str:
    """``dsn`` as it may be shown: without a password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(a DSN libpq cannot parse)"
    if "password" not in params:
        return dsn  # as the admin wrote it
    del params["password"]
    return make_conninfo("", **params)


def read_password(path: Path) -> str:
    """The first line of ``path``, which must be the daemon user's own and closed to everyone else."""
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise StoreError(f"[cluster] password_file {path}: cannot read: {exc.strerror}") from None
    if fault := exposed(path, info, "[cluster] password_file"):
        raise StoreError(fault)
    password = text.splitlines()[0] if text else ""
    if not password:
        raise StoreError(f"[cluster] password_file {path} is empty: put the password on its first line")
    return password


class PostgresStore(Commits, Listener):
    """Records the core's events in the PostgreSQL database ``dsn`` as member ``member``."""

    def __init__(self, dsn: str, *, member: str, password_file: Path | None = None, connect_timeout: float = 5.0,
                 commit_timeout: float = 10.0, retain_seconds: float = 0, max_result_bytes: int = 0,
                 cleanup_interval: float = 60.0) -> None:
        self.dsn = safe_dsn(dsn)  # for messages
        super().__init__(f"PostgreSQL at {self.dsn}", commit_timeout)
        self.member = member
        self.password_file = password_file
        self.connect_timeout = connect_timeout
        self.retain_seconds = retain_seconds
        self.max_result_bytes = max_result_bytes
        self.cleanup_interval = cleanup_interval
        self._conninfo = dsn
        self._password = ""
        self.quarantined: list[Quarantined] = []
        self._pool: AsyncConnectionPool | None = None
        self.epochs: dict[str, int] = {}  # resource -> epoch of this member's dispatch of it (cluster mode)
        self._published: dict[str, tuple[str, str, int, str | None]] = {}  # resource -> the state last published
        self.on_fenced: Callable[[str, list[str]], None] = lambda resource, task_ids: None
        self.on_dropped: Callable[[list[str]], None] = lambda task_ids: None  # their states were not recorded
        self._pending: list[Write] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._cleaned_at = time.monotonic()

    @property
    def location(self) -> str:
        """Where the quarantine table is, as admins are shown it: the DSN without its password."""
        return self.dsn

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def open(self) -> Recovered:
        """Blocking (run in a thread): connect, create or upgrade the schema, register this member, and read back
        what earlier runs left. StoreError, naming the DSN without its password, when any of it fails."""
        if self.password_file is not None:
            self._password = read_password(self.password_file)
        timeout = max(2, round(self.connect_timeout))  # libpq takes whole seconds, at least 2
        self._conninfo = make_conninfo(self._conninfo, connect_timeout=timeout, application_name=f"qrmid {self.member}",
                                       **({"password": self._password} if self._password else {}))
        try:
            applied = schema.migrate(self._conninfo)
            with psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row) as conn:
                conn.execute(MEMBER_STARTED, (self.member,))
                conn.execute(FORGET_WAITS, (self.member, time.time()))
                recovered = _read(conn, self.dsn)
        except (schema.SchemaError, psycopg.Error) as exc:
            if isinstance(exc, schema.SchemaError):
                raise StoreError(f"PostgreSQL at {self.dsn}: {exc}") from None
            raise StoreError(f"cannot use PostgreSQL at {self.dsn}: {self.scrub(exc)}; check [cluster] dsn, the "
                             "password, and that the server runs and takes connections") from None
        self.quarantined = recovered.quarantined
        if applied:
            log.info("PostgreSQL at %s: schema migrations applied: %s", self.dsn, ", ".join(applied))
        log.info("PostgreSQL at %s: member %s, %d task(s) and %d lease(s) recovered", self.dsn, self.member,
                 len(recovered.tasks), len(recovered.leases))
        return recovered

    @property
    def conninfo(self) -> str:
        """The connection string, password included: for this member's own connections only, never shown."""
        return self._conninfo

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """A connection of the pool for a read or a short transaction of its own (autocommit)."""
        assert self._pool is not None
        return self._pool.connection()

    def start(self) -> None:
        """Open the connection pool and start the writer task; call on the event loop, after ``open``."""
        self._loop = asyncio.get_running_loop()
        self._pool = AsyncConnectionPool(self._conninfo, min_size=1, max_size=POOL_SIZE, open=False, name="qrmid store",
                                         timeout=self.connect_timeout, kwargs={"autocommit": True},
                                         check=AsyncConnectionPool.check_connection)
        self._writer = asyncio.create_task(self._run(), name="qrmid store writer")

    def close(self) -> None:
        """Blocking (run in a thread while the loop runs): commit what is pending (giving up if PostgreSQL still
        refuses it) and close the pool."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()

    async def _shutdown(self) -> None:
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
        if self._pool is not None:
            await self._pool.close()

    def _stalled(self) -> str:
        return (f"{self.name} has not committed for {self.commit_timeout:g} s: the request is not taken; retry "
                "later, and check the database server")

    # -- events (on the event loop: enqueue only) ---------------------------------------------------------------

    def task_queued(self, task: Task) -> None:
        view = task.view
        if task.client_request_id:  # first: a request id another member took refuses the task before its insert
            self._write(INSERT_REQUEST, {"owner": task.owner, "request": task.client_request_id, "task": task.id},
                        task.id)
        self._write(INSERT_TASK, (task.id, task.resource, task.owner, task.account, task.priority,
                                  task.payload.kind.value, codec.dump(task.payload), task.shots, task.lease_id,
                                  task.slurm_job_id, task.client_request_id, view.state.value, view.created_at),
                    task.id)
        self._write(INSERT_TRANSITION, (task.id, view.state.value, view.created_at, "", None), task.id)
        if task.warnings:
            self._write("UPDATE tasks SET warnings = %s WHERE id = %s", (json.dumps(task.warnings), task.id), task.id)
        if task.allow_fallback:
            self._write("UPDATE tasks SET allow_fallback = true WHERE id = %s", (task.id,), task.id)
        self._queued(task.id)

    def task_refused(self, task: Task) -> None:
        self._forget(task.id)
        self._write("DELETE FROM tasks WHERE id = %s", (task.id,), notice=f"t:{task.id}")  # its other rows go with it

    def task_submitting(self, task: Task) -> None:
        self._write("UPDATE tasks SET state = %s WHERE id = %s", (SUBMITTING, task.id), task.id,
                    self._fence(task))

    def task_changed(self, task: Task) -> None:
        view = task.view
        payload = codec.dump(task.payload) if view.state.terminal else None  # emptied: only its kind stays
        fence = self._fence(task)
        self._write(UPDATE_TASK, (view.state.value, view.started_at, view.ended_at, view.reason, payload, task.id),
                    task.id, fence)
        self._ref(task)
        if task.result is not None or task.logs:
            result = task.result
            self._write(SET_RESULT, (task.id, result.data if result else None, result.content_type if result else None,
                                     len(result.data) if result else 0, task.logs), task.id, fence)
        self._write(INSERT_TRANSITION, (task.id, view.state.value, view.ended_at or view.started_at or time.time(),
                                        view.reason, task.remote_ref), task.id, fence)
        if view.state.terminal:
            self._write(INSERT_USAGE, (task.id, task.resource, task.owner, task.account or task.owner,
                                       task.slurm_job_id, task.lease_id, view.state.value, view.created_at,
                                       view.started_at, view.ended_at or time.time(), shots_used(task)), task.id, fence)
            self._write("DELETE FROM cancels WHERE task_id = %s", (task.id,), task.id, fence)
        self._changed(task.id)

    def task_ref(self, task: Task) -> None:
        self._ref(task)

    def task_bound(self, task: Task) -> None:
        self._write("UPDATE tasks SET member = %s WHERE id = %s", (task.member, task.id), task.id, self._fence(task))

    def job_released(self, task: Task) -> None:
        self._write("UPDATE remote_refs SET released = true WHERE task_id = %s", (task.id,), task.id,
                    self._fence(task))

    def cancel_requested(self, task: Task, reason: str) -> None:
        self._write("INSERT INTO cancels (task_id, reason, at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (task.id, reason, time.time()), notice=f"c:{task.id}")

    def resource_checked(self, name: str, status: BackendStatus, slots: int, target: str) -> None:
        state = (status.state.value, status.reason, slots, target or None)
        epoch = self.epochs.get(name)
        if epoch is None or self._published.get(name) == state:
            return
        self._published[name] = state
        self._write(PUBLISH, (name, *state, name, time.time()), fence=(name, epoch), notice=f"s:{name}")

    def lease_granted(self, lease: Lease) -> None:
        self._write(UPSERT_LEASE, lease_row(lease), notice=f"l:{lease.id}")

    def lease_ended(self, lease: Lease, reason: str) -> None:
        self._write("DELETE FROM leases WHERE id = %s", (lease.id,), notice=f"l:{lease.id}")

    def resource_drained(self, name: str, reason: str) -> None:
        self._write("INSERT INTO drains (resource, reason, at) VALUES (%s, %s, %s) ON CONFLICT (resource) DO UPDATE "
                    "SET reason = excluded.reason, at = excluded.at", (name, reason, time.time()), notice=f"d:{name}")

    def resource_resumed(self, name: str) -> None:
        self._write("DELETE FROM drains WHERE resource = %s", (name,), notice=f"d:{name}")

    def allocation_set(self, allocation: Allocation) -> None:
        self._write("INSERT INTO allocations (account, resources, limit_kind, qpu_seconds, shots, period, at) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (account, resources) DO UPDATE SET limit_kind = "
                    "excluded.limit_kind, qpu_seconds = excluded.qpu_seconds, shots = excluded.shots, period = "
                    "excluded.period, at = excluded.at", (*allocation_row(allocation), time.time()),
                    notice=f"a:{allocation.account}")

    def allocation_deleted(self, allocation: Allocation) -> None:
        self._write("DELETE FROM allocations WHERE account = %s AND resources = %s", allocation_row(allocation)[:2],
                    notice=f"a:{allocation.account}")

    def window_created(self, window: Window) -> None:
        self._write(INSERT_WINDOW, window_row(window), notice=f"w:{window.id}")

    def window_deleted(self, window: Window) -> None:
        self._write("DELETE FROM windows WHERE id = %s", (window.id,), notice=f"w:{window.id}")

    def _ref(self, task: Task) -> None:
        if task.remote_ref is None:
            self._write("DELETE FROM remote_refs WHERE task_id = %s", (task.id,), task.id, self._fence(task))
        else:
            self._write(SET_REF, (task.id, task.remote_ref), task.id, self._fence(task))

    def dispatching(self, name: str, epoch: int | None) -> None:
        """This member dispatches resource ``name`` from now on, elected at ``epoch`` (None: no longer)."""
        self._published.pop(name, None)
        if epoch is None:
            self.epochs.pop(name, None)
        else:
            self.epochs[name] = epoch

    def _fence(self, task: Task) -> tuple[str, int]:
        """The dispatch a write about ``task``'s run belongs to: epoch 0, which no election gives, when this member
        does not dispatch its resource (such a write is not made)."""
        return task.resource, self.epochs.get(task.resource, 0)

    def _write(self, sql: str, params: tuple[Any, ...] | dict[str, Any], task_id: str = "",
               fence: tuple[str, int] | None = None, notice: str = "") -> None:
        self._enqueued += 1
        self._pending.append(Write(sql, params, task_id, fence, notice or (f"t:{task_id}" if task_id else "")))
        self._wake.set()

    # -- the writer task ---------------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._pool is not None
        await self._pool.open()  # connects in the background, and again whenever a connection is lost
        try:
            await self._commit_loop()
        except asyncio.CancelledError:  # the loop ends without close() (a failed start): stop the pool's workers,
            await self._pool.close()  # or they outlive the loop's shutdown, retrying
            raise

    async def _commit_loop(self) -> None:
        delay = 0.05
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._idle()
                continue
            batch = self._pending[:MAX_BATCH]
            try:
                refused = await self._commit(batch)
            except Exception as exc:  # PostgreSQL lost, or anything else: the writer lives on and retries
                self._lost(await self._why(exc))
                if self._closing:
                    log.error("PostgreSQL at %s: %d write(s) lost at shutdown", self.dsn, len(self._pending))
                    return
                await self._pause(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            self._mended()
            delay = 0.05
            del self._pending[:len(batch)]
            self._settle(self._committed + len(batch), refused)
            await self._tidy()

    async def _idle(self) -> None:
        """Wait for writes, waking for the periodic tidy-up."""
        self._wake.clear()
        wait = max(0.0, self.cleanup_interval - (time.monotonic() - self._cleaned_at))
        try:
            async with asyncio.timeout(wait):
                await self._wake.wait()
        except TimeoutError:
            await self._tidy()

    async def _pause(self, delay: float) -> None:
        """Sleep before a retry; ``close`` cuts it short."""
        self._wake.clear()
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _commit(self, batch: list[Write]) -> dict[str, str]:
        """Commit ``batch`` in one transaction, with the notifications of what it changed. The dispatch writes of an
        epoch that is no longer the resource's are left out (``on_fenced`` learns of them before anyone waiting is
        answered). When PostgreSQL refuses a write for its values, commit the batch again write by write (each in a
        savepoint), leaving out that write and the task's later ones; returns why, by task id. A lost connection
        raises, and nothing is committed."""
        assert self._pool is not None
        async with self._pool.connection() as conn:
            try:
                async with conn.transaction():
                    writes, fenced = await self._unfenced(conn, batch)
                    async with conn.pipeline():
                        for write in writes:
                            await conn.execute(write.sql, write.params)
                        for notice in dict.fromkeys(write.notice for write in writes if write.notice):
                            await conn.execute(NOTIFY, (notice,))
                self._fenced(fenced)
                return {}
            except psycopg.Error as exc:
                if not _refused(exc):
                    raise
            refused: dict[str, str] = {}
            async with conn.transaction():
                writes, fenced = await self._unfenced(conn, batch)
                notices: dict[str, None] = {}
                for write in writes:
                    if write.task_id in refused:
                        continue
                    try:
                        async with conn.transaction():
                            await conn.execute(write.sql, write.params)
                    except psycopg.Error as exc:
                        if not _refused(exc):
                            raise
                        if isinstance(exc, psycopg.errors.UniqueViolation) and isinstance(write.params, dict):  # a request id's
                            refused[write.task_id] = (f"request id {write.params['request']!r} was taken by another "
                                                      "member's task an instant ago: ask for that task")
                            continue
                        self._refusal(refused, write.task_id, f"{type(exc).__name__}: {self.scrub(exc)}")
                        continue
                    if write.notice:
                        notices[write.notice] = None
                for notice in notices:
                    await conn.execute(NOTIFY, (notice,))
        self._fenced(fenced)
        refused.pop("", None)
        return refused

    async def _unfenced(self, conn: psycopg.AsyncConnection, batch: list[Write]) -> tuple[list[Write], Fenced]:
        """The writes of ``batch`` whose dispatch epoch is still their resource's, read in the transaction with a
        share lock, so that no member is elected for the resource before it commits; and the task ids of the others,
        by (resource, epoch)."""
        fences = {write.fence for write in batch if write.fence is not None}
        if not fences:
            return batch, {}
        rows = await (await conn.execute(EPOCHS, ([resource for resource, _ in fences],))).fetchall()
        current: dict[str, int] = {resource: epoch for resource, epoch in rows}
        stale = {fence for fence in fences if current.get(fence[0]) != fence[1]}
        fenced: Fenced = {}
        for write in batch:
            if write.fence in stale:
                fenced.setdefault(write.fence, []).append(write.task_id)
        return [write for write in batch if write.fence not in stale], fenced

    def _fenced(self, fenced: Fenced) -> None:
        """Tell the member that its dispatch of a resource ended (another member was elected) when writes of its
        current epoch were left out, with their tasks; writes made before (an earlier epoch of this member) or after
        it stopped dispatching (epoch 0) are not made either, and their tasks' states are taken back (``on_dropped``):
        no caller may see a state the store does not hold."""
        for (resource, epoch), task_ids in fenced.items():
            if self.epochs.get(resource) != epoch:
                log.debug("PostgreSQL at %s: %d write(s) about %s of a dispatch that ended left out", self.dsn,
                          len(task_ids), resource)
                self.on_dropped(list(dict.fromkeys(task_ids)))
                continue
            log.warning("PostgreSQL at %s: this member no longer dispatches %s (another member was elected); %d "
                        "write(s) of its dispatch were not made", self.dsn, resource, len(task_ids))
            self.dispatching(resource, None)
            self.on_fenced(resource, list(dict.fromkeys(task_ids)))

    async def _tidy(self) -> None:
        """About every ``cleanup_interval`` seconds, in its own transaction: apply retention. A failure is logged and retried later, never holding up the writes."""
        if time.monotonic() - self._cleaned_at < self.cleanup_interval:
            return
        assert self._pool is not None
        self._cleaned_at = time.monotonic()
        try:
            async with self._pool.connection() as conn, conn.transaction():
                dropped = await self._clean(conn)
        except psycopg.Error as exc:
            log.warning("PostgreSQL at %s: retention failed, retried later: %s", self.dsn, self.scrub(exc))
            return
        if dropped:
            log.info("PostgreSQL at %s: dropped %d finished task(s) past retention", self.dsn, dropped)

    async def _clean(self, conn: psycopg.AsyncConnection) -> int:
        """Drop finished tasks older than the retention age, then the oldest until results fit the size cap (their
        transitions, request ids, references and results go with them); and usage records past the age."""
        dropped = 0
        if self.retain_seconds:
            cutoff = time.time() - self.retain_seconds
            dropped += (await conn.execute("DELETE FROM tasks WHERE ended_at < %s", (cutoff,))).rowcount
            await _roll_up(conn, cutoff)
            await conn.execute("DELETE FROM usage WHERE ended_at < %s", (cutoff,))
        if self.max_result_bytes:
            dropped += (await conn.execute(
                """DELETE FROM tasks WHERE id IN (SELECT task_id FROM (SELECT s.task_id, sum(s.bytes) OVER
                (ORDER BY t.ended_at DESC, t.seq DESC) AS total FROM results s JOIN tasks t ON t.id = s.task_id
                WHERE t.ended_at IS NOT NULL) sized WHERE total > %s)""", (self.max_result_bytes,))).rowcount
        return dropped

    # -- on the event loop -------------------------------------------------------------------------------------

    async def _why(self, exc: Exception) -> str:
        """Why a commit failed: for a pool that has no connection to give, the fault of a fresh connection."""
        if isinstance(exc, PoolTimeout):
            try:
                probe = await psycopg.AsyncConnection.connect(self._conninfo)
            except psycopg.Error as fault:
                return self.scrub(fault)
            await probe.close()
        return self.scrub(exc)

    def _lost(self, reason: str) -> None:
        message = (f"{self.name} cannot be written ({reason}): no new tasks are taken until it can; the daemon "
                   "reconnects on its own")
        self._broken(message)
        self._failed(message)

    def scrub(self, exc: BaseException) -> str:
        """An error's text, on one line, with the password blanked should a server or driver ever echo it."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text.replace(self._password, "***") if self._password else text


def lease_row(lease: Lease) -> tuple[Any, ...]:
    """The parameters of UPSERT_LEASE for ``lease``."""
    return (lease.id, lease.token, lease.resource, lease.owner, lease.slurm_job_id, lease.created_at, lease.expires_at,
            lease.account, lease.mode.value, lease.min_slots)


def _refused(exc: psycopg.Error) -> bool:
    """Whether PostgreSQL refused a write for its values (which no retry changes) rather than failed to take it."""
    return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)) or \
        (isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None)  # a value psycopg cannot adapt


def read_windows(rows: Iterable[dict[str, Any]]) -> list[Window]:
    """The admins' windows of ``rows``; a row that cannot be read is logged and left out."""
    windows = []
    for row in rows:
        try:
            windows.append(read_window(row))
        except Exception as exc:
            log.error("PostgreSQL: window %s cannot be read (%s); it is not in force", row.get("id"), exc)
    return windows


async def _roll_up(conn: psycopg.AsyncConnection, cutoff: float) -> None:
    """Keep the usage of the records that ended before ``cutoff``, summed by local day, for allocations."""
    days: dict[tuple[str, str, str], list[float]] = {}
    for account, resource, started, ended, shots in await (await conn.execute(
            "SELECT account, resource, started_at, ended_at, shots FROM usage WHERE ended_at < %s", (cutoff,))).fetchall():
        total = days.setdefault((account, resource, datetime.fromtimestamp(ended).strftime("%Y-%m-%d")), [0.0, 0])
        total[0] += max(ended - started, 0.0) if started is not None else 0.0
        total[1] += shots
    if days:
        async with conn.cursor() as cursor:
            await cursor.executemany(ROLL_UP, [(*key, seconds, int(shots)) for key, (seconds, shots) in days.items()])


def read_used(conn: psycopg.Connection[dict[str, Any]]) -> list[Used]:
    """The usage kept of the tasks the store no longer holds: summed by day past retention, and the records of tasks
    dropped for the size of their results."""
    used = []
    for row in conn.execute("SELECT * FROM usage_days"):
        try:
            used.append(read_used_day(row))
        except Exception as exc:  # left out, never keeping the member from starting
            log.error("PostgreSQL: the usage of account %s on %s kept for %s cannot be read (%s); allocations do not "
                      "count it", row.get("account"), row.get("resource"), row.get("day"), exc)
    return used + [Used(row["account"], row["resource"], row["ended_at"], max(row["ended_at"] - row["started_at"], 0.0)
                        if row["started_at"] is not None else 0.0, row["shots"]) for row in conn.execute(
        "SELECT * FROM usage u WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = u.task_id)")]


def read_allocations(rows: Iterable[dict[str, Any]]) -> list[Allocation]:
    """The admins' allocations of ``rows``, by account; a row that cannot be read is logged and left out."""
    allocations = []
    for row in rows:
        try:
            allocations.append(read_allocation(row))
        except Exception as exc:
            log.error("PostgreSQL: the allocation of account %s cannot be read (%s); it is not in force",
                      row.get("account"), exc)
    return sorted(allocations, key=lambda value: value.key)


def _scalar(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def _read(conn: psycopg.Connection[dict[str, Any]], dsn: str) -> Recovered:
    """Everything the database holds, with each task row that cannot be read moved to the quarantine table."""
    recovered = Recovered()
    conn.execute("DELETE FROM leases WHERE expires_at <= %s", (time.time(),))
    recovered.leases = [read_lease(row) for row in conn.execute(f"SELECT {LEASE_COLUMNS} FROM leases")]
    recovered.drains = {row["resource"]: row["reason"] for row in conn.execute(
        "SELECT resource, reason FROM drains ORDER BY at")}
    recovered.allocations = read_allocations(conn.execute(f"SELECT {ALLOCATION_COLUMNS} FROM allocations"))
    recovered.used = read_used(conn)
    recovered.windows = read_windows(conn.execute(f"SELECT {WINDOW_COLUMNS} FROM windows ORDER BY start_at"))
    bad: list[tuple[dict[str, Any], str]] = []  # row, why
    for row in conn.execute(READ_TASKS + " ORDER BY t.seq").fetchall():
        try:
            task = read_task(row)
        except Exception as exc:  # one unreadable row must not keep the daemon from starting
            bad.append((row, why_unreadable(exc)))
            continue
        recovered.add(task, row["state"], row["released"])
    if bad:
        _quarantine(conn, dsn, bad)
    recovered.quarantined = [Quarantined(**row) for row in conn.execute(
        "SELECT id, source, row_id, key, reason, at FROM quarantine ORDER BY id")]
    return recovered


def _quarantine(conn: psycopg.Connection[dict[str, Any]], dsn: str, bad: list[tuple[dict[str, Any], str]]) -> None:
    """Move unreadable task rows, raw (with their reference, result and logs), to the quarantine table in one
    transaction; their transitions and request ids go with them."""
    now = time.time()
    with conn.transaction():
        for row, why in bad:
            key, raw = raw_row({name: value for name, value in row.items() if name != "seq"})
            conn.execute("INSERT INTO quarantine (source, row_id, key, reason, at, raw) VALUES (%s, %s, %s, %s, %s, "
                         "%s)", ("tasks", row["seq"], key, why, now, raw))
            conn.execute("DELETE FROM tasks WHERE seq = %s", (row["seq"],))
    for row, why in bad:  # once committed
        log_quarantined(log, f"PostgreSQL at {dsn}", row["seq"], "tasks", str(row["id"]), why)
