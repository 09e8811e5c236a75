"""The journal: every task, lease and state change in SQLite (WAL), so a restarted daemon carries on where the
last one stopped.

Callers on the event loop only enqueue writes; one writer thread commits whatever has piled up in a single
transaction (group commit), so a burst of tasks costs one fsync, not one each, and its task inserts, task updates and
transitions each go to SQLite as one statement of many rows. A task's start needs no commit of its own: its writes
wait up to ``LAZY_SECONDS`` for the next write to commit with (a short task's end), and so does the mark that its
backend job was released, so a task costs two commits, its acceptance and its end; an eager task (RunTask on a local
backend) one, when it ends soon: its acceptance waits up to ``EAGER_SECONDS`` for its end. ``durable()`` waits for the
commit of everything enqueued so far, for at most ``commit_timeout`` seconds. When the disk is full or read-only the
writer keeps the pending writes, reports the error (``writable()`` raises it) and retries until the disk takes
them again. A write that can never succeed (a value SQLite cannot store) is refused on its own: the rest of its
batch commits, and whoever waits for that task's record gets Unavailable. A row that cannot be read back at
start-up is moved to the ``quarantine`` table, with its raw values, and start-up goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from qrmid.core.allocations import Allocation, Used, allocation
from qrmid.core.errors import InvalidArgument
from qrmid.core.events import Listener
from qrmid.core.leases import Lease, LeaseMode
from qrmid.core.tasks import Result, Task, TaskState
from qrmid.core.windows import Window
from qrmid.store import codec
from qrmid.store.commits import MAX_BATCH, MAX_RETRY_SECONDS, Commits, Write

log = logging.getLogger(__name__)

SUBMITTING = "submitting"  # journal-only state: handed to the backend, no reference back yet
LAZY_SECONDS = 0.05  # the longest a task's start waits for another write to commit with
EAGER_SECONDS = 0.01  # the longest an eager task's acceptance waits for another write (its end) to commit with
POOL_COLUMNS = {"member": "TEXT NOT NULL DEFAULT ''", "allow_fallback": "INTEGER NOT NULL DEFAULT 0"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, resource TEXT NOT NULL, owner TEXT NOT NULL, account TEXT NOT NULL DEFAULT '',
    priority TEXT NOT NULL DEFAULT '', payload_kind TEXT NOT NULL, payload BLOB NOT NULL, shots INTEGER NOT NULL,
    lease_id TEXT NOT NULL, slurm_job_id TEXT NOT NULL, client_request_id TEXT NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, started_at REAL, ended_at REAL, reason TEXT NOT NULL DEFAULT '', remote_ref TEXT,
    released INTEGER NOT NULL DEFAULT 0, result BLOB, result_type TEXT, result_bytes INTEGER NOT NULL DEFAULT 0,
    logs TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS tasks_ended ON tasks (ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS transitions (task_id TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL,
    reason TEXT NOT NULL, remote_ref TEXT);
CREATE INDEX IF NOT EXISTS transitions_task ON transitions (task_id);
CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, token TEXT NOT NULL, resource TEXT NOT NULL,
    owner TEXT NOT NULL, slurm_job_id TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
    account TEXT NOT NULL DEFAULT '', mode TEXT NOT NULL DEFAULT 'shared', min_slots INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS drains (resource TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS windows (id TEXT PRIMARY KEY, resource TEXT NOT NULL, kind TEXT NOT NULL,
    start_at REAL NOT NULL, end_at REAL NOT NULL, users TEXT NOT NULL, accounts TEXT NOT NULL,
    groups_ TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS allocations (account TEXT NOT NULL, resources TEXT NOT NULL, limit_kind TEXT NOT NULL,
    qpu_seconds REAL NOT NULL, shots INTEGER NOT NULL, period TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (account, resources));
CREATE TABLE IF NOT EXISTS usage_days (account TEXT NOT NULL, resource TEXT NOT NULL, day TEXT NOT NULL,
    qpu_seconds REAL NOT NULL, shots INTEGER NOT NULL, PRIMARY KEY (account, resource, day));
CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
    row_id INTEGER NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL, raw TEXT NOT NULL);
"""

INSERT_TASK = """INSERT OR REPLACE INTO tasks (id, resource, owner, account, priority, payload_kind, payload, shots,
    lease_id, slurm_job_id, client_request_id, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
UPDATE_TASK = """UPDATE tasks SET state = ?, started_at = ?, ended_at = ?, reason = ?, remote_ref = ?, result = ?,
    result_type = ?, result_bytes = ?, logs = ?, payload = coalesce(?, payload) WHERE id = ?"""
INSERT_TRANSITION = "INSERT INTO transitions VALUES (?, ?, ?, ?, ?)"
# the same writes, many rows to a statement: VALUES rows follow each, and the updates' rows are named column1...
INSERT_TASKS = INSERT_TASK.partition("VALUES")[0] + "VALUES "
INSERT_TRANSITIONS = "INSERT INTO transitions VALUES "
UPDATE_TASKS = """UPDATE tasks SET state = v.column1, started_at = v.column2, ended_at = v.column3, reason = v.column4,
    remote_ref = v.column5, result = v.column6, result_type = v.column7, result_bytes = v.column8, logs = v.column9,
    payload = coalesce(v.column10, tasks.payload) FROM (VALUES {rows}) AS v WHERE tasks.id = v.column11"""
ROLL_UP = """INSERT INTO usage_days (account, resource, day, qpu_seconds, shots)
    SELECT CASE account WHEN '' THEN owner ELSE account END, resource, date(ended_at, 'unixepoch', 'localtime'),
    sum(CASE WHEN started_at IS NULL THEN 0.0 ELSE max(ended_at - started_at, 0.0) END),
    sum(CASE state WHEN 'completed' THEN shots ELSE 0 END) FROM tasks WHERE id IN ({ids}) AND ended_at IS NOT NULL
    GROUP BY 1, 2, 3 ON CONFLICT (account, resource, day) DO UPDATE SET
    qpu_seconds = qpu_seconds + excluded.qpu_seconds, shots = shots + excluded.shots"""  # dropped tasks' usage
PAYLOAD_COLUMN = 9  # the payload's place in UPDATE_TASK's parameters (None: kept)


class JournalError(Exception):
    """The journal cannot be opened; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A stored row that could not be read back, kept aside in the ``quarantine`` table with its raw values."""

    id: int
    source: str  # the table it came from: tasks or leases
    row_id: int  # its rowid there (the journal), or its seq (PostgreSQL's tasks)
    key: str  # the task or lease id it holds, as far as it could be read
    reason: str
    at: float  # when it was quarantined


@dataclass
class Recovered:
    """What the journal holds from earlier runs."""

    tasks: list[Task] = field(default_factory=list)  # in the order they were queued
    held: set[str] = field(default_factory=set)  # finished tasks whose backend job may not be released yet
    submitting: set[str] = field(default_factory=set)  # queued tasks that were being handed to their backend
    leases: list[Lease] = field(default_factory=list)
    drains: dict[str, str] = field(default_factory=dict)  # resources an admin drained, with the reason
    windows: list[Window] = field(default_factory=list)  # reservations and maintenance windows admins created
    allocations: list[Allocation] = field(default_factory=list)  # budgets an admin set, by account
    used: list[Used] = field(default_factory=list)  # usage of the finished tasks dropped past retention
    quarantined: list[Quarantined] = field(default_factory=list)  # every row ever quarantined, oldest first

    def add(self, task: Task, stored_state: str, released: bool) -> None:
        """A task read back, whose state column holds ``stored_state`` and whose backend job is ``released`` or not."""
        self.tasks.append(task)
        if task.state.terminal and task.remote_ref and not released:
            self.held.add(task.id)
        if stored_state == SUBMITTING:
            self.submitting.add(task.id)


def with_history(task: Task, state: TaskState, reason: str, created_at: float, started_at: float | None,
                 ended_at: float | None) -> Task:
    """``task`` with the history its stored columns tell: queued at ``created_at``, running from ``started_at`` when
    it started, and ``state`` (with ``reason``) at ``ended_at`` when that is terminal."""
    queued = replace(task.history[0], created_at=created_at)
    history = [queued]
    if started_at is not None:
        history.append(replace(queued, state=TaskState.RUNNING, started_at=started_at))
    if state.terminal:
        history.append(replace(history[-1], state=state, reason=reason, ended_at=ended_at))
    task.history = history
    return task


class Journal(Commits, Listener):
    """Records the core's events in ``path``; one journal per daemon (a lock file keeps a second one out)."""

    before_commit: ClassVar[Callable[[], None] | None] = None  # fault injection: runs in the writer before COMMIT

    def __init__(self, path: Path, *, retain_seconds: float = 0, max_result_bytes: int = 0,
                 cleanup_interval: float = 60.0, commit_timeout: float = 10.0) -> None:
        super().__init__(f"the journal {path}", commit_timeout)
        self.path = path
        self.retain_seconds = retain_seconds
        self.max_result_bytes = max_result_bytes
        self.cleanup_interval = cleanup_interval
        self.quarantined: list[Quarantined] = []
        self._conn: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._pending: queue.SimpleQueue[list[Write] | None] = queue.SimpleQueue()  # groups of writes, in order
        self._held: list[Write] = []  # this turn of the event loop's writes, handed to the writer together
        self._handing = False  # a hand-over of ``_held`` is scheduled
        self._lazy: list[Write] = []  # enqueued writes held back for the next one (a task's start)
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._variables = 999  # the most parameters SQLite takes in one statement (read at open)
        self._writer: threading.Thread | None = None
        self._closing = False
        self._cleaned_at = time.monotonic()

    @property
    def location(self) -> str:
        """Where the quarantine table is, as admins are shown it."""
        return str(self.path)

    # -- lifecycle (blocking: run in a thread) --------------------------------------------------------------------

    def open(self) -> Recovered:
        """Lock and open the journal (creating it), and read back what earlier runs left."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot create the journal {self.path}: {exc.strerror}; check [journal] path "
                               f"and the permissions of {self.path.parent}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._unlock()
            raise JournalError(f"the journal {self.path} is in use by another qrmid; give each daemon its own "
                               f"[journal] path") from None
        conn = None
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            os.chmod(self.path, 0o600)  # it holds lease tokens and payloads
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self._variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            conn.executescript(SCHEMA)
            lease_columns = {row[1] for row in conn.execute("PRAGMA table_info(leases)")}
            if "account" not in lease_columns:  # an early journal
                conn.execute("ALTER TABLE leases ADD COLUMN account TEXT NOT NULL DEFAULT ''")
            if "mode" not in lease_columns:  # a journal from before lease modes
                conn.execute("ALTER TABLE leases ADD COLUMN mode TEXT NOT NULL DEFAULT 'shared'")
                conn.execute("ALTER TABLE leases ADD COLUMN min_slots INTEGER NOT NULL DEFAULT 0")
            task_columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
            for column, kind in POOL_COLUMNS.items():  # a pool's task: its member, whether it allows the fallback
                if column not in task_columns:
                    conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
            if "warnings" not in task_columns:  # the warnings a task was accepted with (a JSON array; '': none)
                conn.execute("ALTER TABLE tasks ADD COLUMN warnings TEXT NOT NULL DEFAULT ''")
            recovered = _read(conn, self.path)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            self._unlock()
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from None
        self._conn = conn
        self.quarantined = recovered.quarantined
        log.info("journal %s: %d task(s) and %d lease(s) recovered", self.path, len(recovered.tasks),
                 len(recovered.leases))
        return recovered

    def start(self) -> None:
        """Start the writer thread; call on the event loop, after ``open``."""
        self._loop = asyncio.get_running_loop()
        self._writer = threading.Thread(target=self._run, name="qrmid journal writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Commit what is pending (giving up if the disk still refuses it) and close."""
        self._closing = True
        self._hand_over()
        if self._writer is not None:
            self._pending.put(None)
            self._writer.join()
        if self._conn is not None:
            self._conn.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _stalled(self) -> str:
        return (f"{self.name} has not committed for {self.commit_timeout:g} s (a slow or stuck disk?): the request "
                "is not taken; retry later, and check the disk holding it")

    # -- events (on the event loop: enqueue only) ---------------------------------------------------------------

    def task_queued(self, task: Task) -> None:
        view = task.view
        lazy = EAGER_SECONDS if task.eager else 0.0  # it runs meanwhile: a short task's end commits with it
        self._write(INSERT_TASK, (task.id, task.resource, task.owner, task.account, task.priority, task.payload.kind.value,
                                  codec.dump(task.payload), task.shots, task.lease_id, task.slurm_job_id,
                                  task.client_request_id, view.state.value, view.created_at), task.id, lazy)
        self._write(INSERT_TRANSITION, (task.id, view.state.value, view.created_at, "", None), task.id, lazy)
        if task.allow_fallback:
            self._write("UPDATE tasks SET allow_fallback = 1 WHERE id = ?", (task.id,), task.id, lazy)
        if task.warnings:
            self._write("UPDATE tasks SET warnings = ? WHERE id = ?", (json.dumps(task.warnings), task.id), task.id, lazy)
        self._queued(task.id)

    def task_refused(self, task: Task) -> None:
        self._forget(task.id)
        self._write("DELETE FROM tasks WHERE id = ?", (task.id,))
        self._write("DELETE FROM transitions WHERE task_id = ?", (task.id,))

    def task_submitting(self, task: Task) -> None:
        self._write("UPDATE tasks SET state = ? WHERE id = ?", (SUBMITTING, task.id), task.id)

    def task_changed(self, task: Task) -> None:
        view = task.view
        result = task.result
        payload = codec.dump(task.payload) if view.state.terminal else None  # emptied: only its kind stays
        # a start is committed with what comes next: a restart finds the task queued, or being submitted, and so runs
        # or re-attaches it as when it crashes just before this write
        lazy = LAZY_SECONDS if view.state is TaskState.RUNNING else 0.0
        self._write(UPDATE_TASK, (view.state.value, view.started_at, view.ended_at, view.reason, task.remote_ref,
                                  result.data if result else None, result.content_type if result else None,
                                  len(result.data) if result else 0, task.logs, payload, task.id), task.id, lazy)
        self._write(INSERT_TRANSITION, (task.id, view.state.value, view.ended_at or view.started_at or time.time(),
                                        view.reason, task.remote_ref), task.id, lazy)
        self._changed(task.id)

    def task_ref(self, task: Task) -> None:
        self._write("UPDATE tasks SET remote_ref = ? WHERE id = ?", (task.remote_ref, task.id), task.id)

    def task_bound(self, task: Task) -> None:
        self._write("UPDATE tasks SET member = ? WHERE id = ?", (task.member, task.id), task.id)

    def job_released(self, task: Task) -> None:
        # nobody waits for it: lost in a crash, the restarted daemon releases the job again, as after a crash just
        # before it was written
        self._write("UPDATE tasks SET released = 1 WHERE id = ?", (task.id,), task.id, lazy=LAZY_SECONDS)

    def lease_granted(self, lease: Lease) -> None:
        self._write("INSERT OR REPLACE INTO leases (id, token, resource, owner, slurm_job_id, created_at, expires_at, "
                    "account, mode, min_slots) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (lease.id, lease.token, lease.resource, lease.owner, lease.slurm_job_id, lease.created_at,
                     lease.expires_at, lease.account, lease.mode.value, lease.min_slots))

    def lease_ended(self, lease: Lease, reason: str) -> None:
        self._write("DELETE FROM leases WHERE id = ?", (lease.id,))

    def resource_drained(self, name: str, reason: str) -> None:
        self._write("INSERT OR REPLACE INTO drains (resource, reason, at) VALUES (?, ?, ?)", (name, reason, time.time()))

    def resource_resumed(self, name: str) -> None:
        self._write("DELETE FROM drains WHERE resource = ?", (name,))

    def window_created(self, window: Window) -> None:
        self._write("INSERT OR REPLACE INTO windows (id, resource, kind, start_at, end_at, users, accounts, groups_, "
                    "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", window_row(window))

    def window_deleted(self, window: Window) -> None:
        self._write("DELETE FROM windows WHERE id = ?", (window.id,))

    def allocation_set(self, allocation: Allocation) -> None:
        self._write("INSERT OR REPLACE INTO allocations (account, resources, limit_kind, qpu_seconds, shots, period, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (*allocation_row(allocation), time.time()))

    def allocation_deleted(self, allocation: Allocation) -> None:
        self._write("DELETE FROM allocations WHERE account = ? AND resources = ?", allocation_row(allocation)[:2])

    def _write(self, sql: str, params: tuple[Any, ...], task_id: str = "", lazy: float = 0.0) -> None:
        """Enqueue a write. The writes of one turn of the event loop reach the writer together, in one commit; a
        ``lazy`` one waits for the next write that is not, or ``lazy`` seconds, to share its commit (it counts as
        enqueued at once: ``durable()`` waits for it)."""
        self._enqueued += 1
        write = (sql, params, task_id)
        if self._loop is None:  # not started: nothing to group with
            self._pending.put([write])
        elif lazy:
            self._lazy.append(write)
            due = self._loop.time() + lazy
            if self._lazy_timer is None or self._lazy_timer.when() > due:
                if self._lazy_timer is not None:
                    self._lazy_timer.cancel()
                self._lazy_timer = self._loop.call_at(due, self._hand_over)
        else:
            if self._lazy:  # enqueued before this one: they go first
                self._held += self._lazy
                self._lazy = []
            self._held.append(write)
            if not self._handing:
                self._handing = True
                self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        """Hand the held writes, then the lazy ones, to the writer as one group, in the order they were enqueued."""
        self._handing = False
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        held, self._held = self._held, []  # each taken at once: ``close`` may run in another thread meanwhile
        lazy, self._lazy = self._lazy, []
        if held or lazy:
            self._pending.put(held + lazy)

    # -- the writer thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._conn is not None and self._loop is not None
        batch: list[Write] = []
        stopping = False
        done = 0
        delay = 0.05
        while True:
            if not batch and not stopping:
                stopping = self._take(batch)
            if not batch and stopping:
                return
            try:
                refused = self._commit(batch)
            except Exception as exc:  # the disk, or anything else: the writer lives on and retries
                message = (f"{self.name} cannot be written ({exc}); free space on its filesystem or make "
                           f"{self.path.parent} writable: no new tasks are taken until it can be written")
                self._broken(message)
                self._loop.call_soon_threadsafe(self._failed, message)
                if self._closing:
                    log.error("journal %s: %d write(s) lost at shutdown", self.path, len(batch))
                    return
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            self._mended()
            delay = 0.05
            done += len(batch)
            batch = []
            self._loop.call_soon_threadsafe(self._settle, done, refused)
            self._tidy()

    def _take(self, batch: list[Write]) -> bool:
        """Wait for writes and take every group pending (until past MAX_BATCH writes); True when ``close`` was
        called."""
        item = self._pending.get()
        while item is not None:
            batch += item
            if len(batch) >= MAX_BATCH:
                return False
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                return False
        return True

    def _commit(self, batch: list[Write]) -> dict[str, str]:
        """Commit ``batch`` in one transaction, leaving out the writes SQLite refuses for their values; returns
        why, by task id. A failure of the disk (or of the transaction) raises, and nothing is committed.

        The writes go as few statements of many rows (each statement is a wait for the interpreter's lock, which
        the event loop holds while busy); when SQLite refuses one for its values, the batch is written again one
        write at a time, leaving out only the writes refused."""
        assert self._conn is not None
        conn = self._conn
        refused: dict[str, str] = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            try:
                for sql, params in merged(batch, self._variables):
                    conn.execute(sql, params)
            except Exception as exc:
                if _of_the_disk(exc) or not conn.in_transaction:
                    raise
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                refused = self._one_by_one(batch)
            if Journal.before_commit is not None:
                Journal.before_commit()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        refused.pop("", None)
        return refused

    def _one_by_one(self, batch: list[Write]) -> dict[str, str]:
        """Execute ``batch`` a write at a time in the open transaction, leaving out those SQLite refuses for their
        values; returns why, by task id."""
        assert self._conn is not None
        refused: dict[str, str] = {}
        for sql, params, task_id in batch:
            try:
                self._conn.execute(sql, params)
            except Exception as exc:
                if _of_the_disk(exc) or not self._conn.in_transaction:
                    raise
                self._refusal(refused, task_id, f"{type(exc).__name__}: {exc}")
        return refused

    def _tidy(self) -> None:
        """Apply retention, about every ``cleanup_interval`` seconds, in its own transaction: a failure is logged
        and retried later, never holding up the writes."""
        if time.monotonic() - self._cleaned_at < self.cleanup_interval:
            return
        assert self._conn is not None
        self._cleaned_at = time.monotonic()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._clean(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            log.warning("journal %s: retention failed, retried later: %s", self.path, exc)
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def _clean(self, conn: sqlite3.Connection) -> None:
        """Drop finished tasks older than the retention age, then the oldest until results fit the size cap."""
        doomed: list[str] = []
        if self.retain_seconds:
            cutoff = time.time() - self.retain_seconds
            doomed += [row[0] for row in conn.execute(
                "SELECT id FROM tasks WHERE ended_at IS NOT NULL AND ended_at < ?", (cutoff,))]
        if self.max_result_bytes:
            kept = set(doomed)
            rows = conn.execute("SELECT id, result_bytes FROM tasks WHERE ended_at IS NOT NULL ORDER BY ended_at DESC")
            total = 0
            for task_id, size in rows:
                total += size
                if total > self.max_result_bytes and task_id not in kept:
                    doomed.append(task_id)
        for start in range(0, len(doomed), 500):  # their usage is kept, summed by day, for allocations
            chunk = doomed[start:start + 500]
            conn.execute(ROLL_UP.format(ids=", ".join("?" * len(chunk))), chunk)
        for task_id in doomed:
            conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
            conn.execute("DELETE FROM transitions WHERE task_id = ?", (task_id,))
        if doomed:
            log.info("journal %s: dropped %d finished task(s) past retention", self.path, len(doomed))


def merged(batch: list[Write], variables: int) -> list[tuple[str, tuple[Any, ...]]]:
    """``batch`` as statements that write the same, fewer: each run of task inserts, task updates and transitions
    becomes one statement of the inserts, one of the updates (a task's last, with the payload the last of them that
    set one gave) and one of the transitions, each of at most ``variables`` parameters; other writes stay as they are,
    in their place."""
    statements: list[tuple[str, tuple[Any, ...]]] = []
    inserts: list[tuple[Any, ...]] = []
    updates: dict[str, tuple[Any, ...]] = {}
    transitions: list[tuple[Any, ...]] = []

    def close_run() -> None:
        statements.extend(_rows(INSERT_TASKS + "{rows}", inserts, variables))
        statements.extend(_rows(UPDATE_TASKS, list(updates.values()), variables))
        statements.extend(_rows(INSERT_TRANSITIONS + "{rows}", transitions, variables))
        inserts.clear()
        updates.clear()
        transitions.clear()

    for sql, params, _ in batch:
        if sql == INSERT_TASK:
            if params[0] in updates:  # replaced after an update in this run: in order
                close_run()
            inserts.append(params)
        elif sql == UPDATE_TASK:
            earlier = updates.get(params[-1])
            if earlier is not None and params[PAYLOAD_COLUMN] is None:
                params = (*params[:PAYLOAD_COLUMN], earlier[PAYLOAD_COLUMN], *params[PAYLOAD_COLUMN + 1:])
            updates[params[-1]] = params
        elif sql == INSERT_TRANSITION:
            transitions.append(params)
        else:
            close_run()
            statements.append((sql, params))
    close_run()
    return statements


def _rows(template: str, rows: list[tuple[Any, ...]], variables: int) -> list[tuple[str, tuple[Any, ...]]]:
    """Statements of ``template`` with ``rows`` as its ``{rows}`` of VALUES, as many rows to each as ``variables``
    parameters allow."""
    if not rows:
        return []
    row = "(" + ", ".join("?" * len(rows[0])) + ")"
    per = max(1, variables // len(rows[0]))
    return [(template.format(rows=", ".join([row] * len(chunk))), tuple(value for params in chunk for value in params))
            for chunk in (rows[start:start + per] for start in range(0, len(rows), per))]


def _of_the_disk(exc: Exception) -> bool:
    """Whether a failed write may succeed when retried (the disk, the file, memory), rather than never (its
    values: an integer past 64 bits, an unsupported type, a constraint)."""
    return isinstance(exc, (sqlite3.OperationalError, OSError, MemoryError)) or type(exc) is sqlite3.DatabaseError


def _read(conn: sqlite3.Connection, path: Path) -> Recovered:
    """Everything the journal holds, with each row that cannot be read moved to the quarantine table."""
    recovered = Recovered()
    conn.execute("DELETE FROM leases WHERE expires_at <= ?", (time.time(),))
    bad: list[tuple[str, sqlite3.Row, str]] = []  # table, row, why
    conn.row_factory = sqlite3.Row
    try:
        for row in conn.execute("SELECT rowid AS row_id, * FROM leases ORDER BY rowid"):
            try:
                recovered.leases.append(read_lease(row))
            except Exception as exc:
                bad.append(("leases", row, why_unreadable(exc)))
        for row in conn.execute("SELECT rowid AS row_id, * FROM tasks ORDER BY rowid"):
            try:
                task = read_task(row)
            except Exception as exc:
                bad.append(("tasks", row, why_unreadable(exc)))
                continue
            recovered.add(task, row["state"], bool(row["released"]))
        for row in conn.execute("SELECT rowid AS row_id, * FROM drains ORDER BY rowid"):
            if isinstance(row["resource"], str) and isinstance(row["reason"], str):
                recovered.drains[row["resource"]] = row["reason"]
            else:
                bad.append(("drains", row, "its resource or reason is not text"))
        for row in conn.execute("SELECT rowid AS row_id, * FROM windows ORDER BY start_at"):
            try:
                recovered.windows.append(read_window(row))
            except Exception as exc:
                bad.append(("windows", row, why_unreadable(exc)))
        for row in conn.execute("SELECT rowid AS row_id, * FROM usage_days"):
            try:
                recovered.used.append(read_used_day(row))
            except Exception as exc:
                bad.append(("usage_days", row, why_unreadable(exc)))
        for row in conn.execute("SELECT rowid AS row_id, * FROM allocations ORDER BY account, resources"):
            try:
                recovered.allocations.append(read_allocation(row))
            except Exception as exc:
                bad.append(("allocations", row, why_unreadable(exc)))
    finally:
        conn.row_factory = None
    if bad:
        _quarantine(conn, path, bad)
    recovered.quarantined = [Quarantined(*row) for row in conn.execute(
        "SELECT id, source, row_id, key, reason, at FROM quarantine ORDER BY id")]
    return recovered


def _quarantine(conn: sqlite3.Connection, path: Path, bad: list[tuple[str, sqlite3.Row, str]]) -> None:
    """Move unreadable rows, raw, from their table to the quarantine table, in one transaction."""
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, row, why in bad:
            key, raw = raw_row({name: value for name, value in zip(row.keys(), row, strict=True) if name != "row_id"})
            conn.execute("INSERT INTO quarantine (source, row_id, key, reason, at, raw) VALUES (?, ?, ?, ?, ?, ?)",
                         (table, row["row_id"], key, why, now, raw))
            conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (row["row_id"],))  # table: one of ours
            log_quarantined(log, f"journal {path}", row["row_id"], table, key, why)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def why_unreadable(exc: Exception) -> str:
    """Why a row could not be read back, as the quarantine records it."""
    return str(exc) if isinstance(exc, codec.CorruptPayload | CorruptRow) else f"{type(exc).__name__}: {exc}"


def raw_row(columns: Mapping[str, Any]) -> tuple[str, str]:
    """An unreadable row's key (the task or lease id, or the resource, as far as it can be read) and its raw
    values as the quarantine keeps them: JSON, with bytes as base64 in an object."""
    raw = {name: _plain(value) for name, value in columns.items()}
    return str(raw.get("id", raw.get("resource", ""))), json.dumps(raw)


def log_quarantined(logger: logging.Logger, store: str, row_id: int, table: str, key: str, why: str) -> None:
    """The error a store logs for each row it moved to its quarantine table."""
    logger.error("%s: row %d of table %s (%s) cannot be read: %s; it was moved to the quarantine table and start-up "
                 "goes on (`qrmid admin quarantine` lists it)", store, row_id, table, key or "no id", why)


def _plain(value: object) -> object:
    """A column's value as JSON can hold it: bytes (and memoryviews) as base64 in an object, the rest as read."""
    if isinstance(value, bytes | memoryview):
        return {"base64": base64.b64encode(value).decode()}
    return value


class CorruptRow(ValueError):
    """A stored row whose columns do not hold what qrmid wrote; the message names the column."""


Row = sqlite3.Row | Mapping[str, Any]  # a row read back, by column name


def _column(row: Row, name: str, *kinds: type) -> Any:
    """``row[name]`` when it is one of ``kinds`` (a finite number for float); CorruptRow otherwise."""
    value = row[name]
    if float in kinds and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise CorruptRow(f"column {name} is {value!r}, not a finite number")
        return value
    if not isinstance(value, kinds):
        raise CorruptRow(f"column {name} holds {type(value).__name__} {_short(value)}, not "
                         f"{' or '.join('null' if kind is type(None) else kind.__name__ for kind in kinds)}")
    return value


def _pooled(row: Row, name: str, kind: type, default: Any) -> Any:
    """A pool column of ``row`` (``default`` for a store without it); CorruptRow when it holds another kind."""
    return _column(row, name, kind) if name in row.keys() else default  # noqa: SIM118 (a Row's "in" reads values)


def _warnings(row: Row) -> tuple[str, ...]:
    """The warnings a stored task was accepted with (none for a store without them); CorruptRow when the column does
    not hold a JSON array of text."""
    text = _pooled(row, "warnings", str, "")
    try:
        warnings = json.loads(text) if text else []
    except ValueError:
        warnings = None
    if not isinstance(warnings, list) or not all(isinstance(warning, str) for warning in warnings):
        raise CorruptRow(f"column warnings holds {_short(text)}, not a JSON array of text")
    return tuple(warnings)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def allocation_row(allocation: Allocation) -> tuple[str, str, str, float, int, str]:
    """An allocation's columns: account, resources (a JSON list), limit_kind, qpu_seconds, shots, period."""
    return (allocation.account, json.dumps(list(allocation.resources)), allocation.limit, allocation.qpu_seconds,
            allocation.shots, allocation.period)


def read_used_day(row: Row) -> Used:
    """A day's usage as a store kept it past retention; CorruptRow when a column does not hold what qrmid wrote."""
    day = _column(row, "day", str)
    try:
        midnight = datetime.strptime(day, "%Y-%m-%d").timestamp()
    except ValueError:
        raise CorruptRow(f"column day is {_short(day)}, not a date (YYYY-MM-DD)") from None
    return Used(_column(row, "account", str), _column(row, "resource", str), midnight,
                _column(row, "qpu_seconds", float), _column(row, "shots", int))


def read_allocation(row: Row) -> Allocation:
    """An allocation as a store left it; CorruptRow when a column does not hold what qrmid wrote."""
    resources = json.loads(_column(row, "resources", str))
    if not isinstance(resources, list) or not all(isinstance(name, str) for name in resources):
        raise CorruptRow(f"column resources holds {_short(resources)}, not a list of names")
    try:
        return allocation(_column(row, "account", str), resources, _column(row, "limit_kind", str),
                          _column(row, "qpu_seconds", float), _column(row, "shots", int), _column(row, "period", str),
                          resources)
    except InvalidArgument as exc:
        raise CorruptRow(str(exc)) from None


def read_lease(row: Row) -> Lease:
    """A lease as a store left it; CorruptRow when a column does not hold what qrmid wrote."""
    try:
        mode = LeaseMode(_column(row, "mode", str))
    except ValueError:
        raise CorruptRow(f"column mode holds {_short(row['mode'])}, not shared or exclusive") from None
    min_slots = _column(row, "min_slots", int)
    if min_slots < 0:
        raise CorruptRow(f"column min_slots holds {min_slots}, a negative number")
    return Lease(id=_column(row, "id", str), token=_column(row, "token", str), resource=_column(row, "resource", str),
                 owner=_column(row, "owner", str), slurm_job_id=_column(row, "slurm_job_id", str),
                 created_at=_column(row, "created_at", float), expires_at=_column(row, "expires_at", float),
                 account=_column(row, "account", str), mode=mode, min_slots=min_slots)


def window_row(window: Window) -> tuple[Any, ...]:
    """The columns a store keeps of an admin's window (the name lists as JSON arrays)."""
    return (window.id, window.resource, window.kind, window.start, window.end, json.dumps(window.users),
            json.dumps(window.accounts), json.dumps(window.groups), window.reason)


def read_window(row: Row) -> Window:
    """An admin's window as a store kept it; CorruptRow when a column does not hold what qrmid wrote."""
    lists = {}
    for name in ("users", "accounts", "groups_"):
        try:
            names = json.loads(_column(row, name, str))
        except ValueError:
            raise CorruptRow(f"column {name} is not JSON") from None
        if not isinstance(names, list) or not all(isinstance(item, str) for item in names):
            raise CorruptRow(f"column {name} is not a list of names")
        lists[name] = tuple(names)
    return Window(_column(row, "id", str), _column(row, "resource", str), _column(row, "kind", str),
                  _column(row, "start_at", float), _column(row, "end_at", float), lists["users"], lists["accounts"],
                  lists["groups_"], _column(row, "reason", str))


def read_task(row: Row) -> Task:
    """A task as a store left it (a row of the journal's or the PostgreSQL store's columns): QUEUED (also when it
    was being submitted), RUNNING or finished; CorruptRow or CorruptPayload when a column does not hold what qrmid
    wrote."""
    text = {name: _column(row, name, str) for name in (
        "id", "resource", "owner", "account", "priority", "payload_kind", "lease_id", "slurm_job_id",
        "client_request_id", "state", "reason", "logs")}
    shots = _column(row, "shots", int)
    if shots < 0:
        raise CorruptRow(f"column shots is {shots}, not a count")
    state_name = text["state"]
    try:
        state = TaskState.QUEUED if state_name == SUBMITTING else TaskState(state_name)
    except ValueError:
        raise CorruptRow(f"column state is {state_name!r}, not a task state") from None
    created_at = _column(row, "created_at", float)
    started_at = _column(row, "started_at", float, type(None))
    ended_at = _column(row, "ended_at", float, type(None))
    if state.terminal and ended_at is None:
        raise CorruptRow(f"the task is {state_name} but column ended_at is null")
    task = Task(resource=text["resource"], owner=text["owner"],
                payload=codec.load(text["payload_kind"], _column(row, "payload", bytes, str)),
                shots=shots, lease_id=text["lease_id"], slurm_job_id=text["slurm_job_id"],
                client_request_id=text["client_request_id"], id=text["id"],
                remote_ref=_column(row, "remote_ref", str, type(None)), logs=text["logs"], priority=text["priority"],
                account=text["account"], member=_pooled(row, "member", str, ""),
                allow_fallback=bool(_pooled(row, "allow_fallback", int, 0)), warnings=_warnings(row))
    if (result := _column(row, "result", bytes, type(None))) is not None:
        task.result = Result(result, _column(row, "result_type", str))
    return with_history(task, state, text["reason"], created_at, started_at, ended_at)
