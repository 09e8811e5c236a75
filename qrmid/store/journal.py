"""The journal: every task, lease and state change in SQLite (WAL), so a restarted daemon carries on where the
last one stopped.

Callers on the event loop only enqueue writes; one writer thread commits whatever has piled up in a single
transaction (group commit), so a burst of tasks costs one fsync, not one each. ``durable()`` waits for the commit
of everything enqueued so far. When the disk is full or read-only the writer keeps the pending writes, reports
the error (``writable()`` raises it) and retries until the disk takes them again.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qrmid.core.errors import Unavailable
from qrmid.core.events import Listener
from qrmid.core.leases import Lease
from qrmid.core.tasks import Result, Task, TaskState
from qrmid.store import codec

log = logging.getLogger(__name__)

MAX_BATCH = 5_000  # writes per transaction
MAX_RETRY_SECONDS = 5.0
SUBMITTING = "submitting"  # journal-only state: handed to the backend, no reference back yet

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
    account TEXT NOT NULL DEFAULT '');
"""

INSERT_TASK = """INSERT OR REPLACE INTO tasks (id, resource, owner, account, priority, payload_kind, payload, shots,
    lease_id, slurm_job_id, client_request_id, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
UPDATE_TASK = """UPDATE tasks SET state = ?, started_at = ?, ended_at = ?, reason = ?, remote_ref = ?, result = ?,
    result_type = ?, result_bytes = ?, logs = ?, payload = coalesce(?, payload) WHERE id = ?"""


class JournalError(Exception):
    """The journal cannot be opened; the message says why and what to do."""


@dataclass
class Recovered:
    """What the journal holds from earlier runs."""

    tasks: list[Task] = field(default_factory=list)  # in the order they were queued
    held: set[str] = field(default_factory=set)  # finished tasks whose backend job may not be released yet
    submitting: set[str] = field(default_factory=set)  # queued tasks that were being handed to their backend
    leases: list[Lease] = field(default_factory=list)


class Journal(Listener):
    """Records the core's events in ``path``; one journal per daemon (a lock file keeps a second one out)."""

    def __init__(self, path: Path, *, retain_seconds: float = 0, max_result_bytes: int = 0,
                 cleanup_interval: float = 60.0) -> None:
        self.path = path
        self.retain_seconds = retain_seconds
        self.max_result_bytes = max_result_bytes
        self.cleanup_interval = cleanup_interval
        self.error = ""  # why the last commit failed; empty while the journal is written
        self._conn: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._pending: queue.SimpleQueue[tuple[str, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._enqueued = 0
        self._committed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._closing = False
        self._cleaned_at = time.monotonic()

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
            conn.executescript(SCHEMA)
            if "account" not in {row[1] for row in conn.execute("PRAGMA table_info(leases)")}:  # an early journal
                conn.execute("ALTER TABLE leases ADD COLUMN account TEXT NOT NULL DEFAULT ''")
            recovered = _read(conn)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            self._unlock()
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from None
        self._conn = conn
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

    # -- durability --------------------------------------------------------------------------------------------

    def writable(self) -> None:
        """Raise Unavailable while the journal cannot be written."""
        if self.error:
            raise Unavailable(self.error)

    async def durable(self) -> None:
        """Return once everything enqueued so far is committed; Unavailable when the disk refuses it."""
        self.writable()
        if self._committed >= self._enqueued:
            return
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiters.append((self._enqueued, waiter))
        await waiter

    # -- events (on the event loop: enqueue only) ---------------------------------------------------------------

    def task_queued(self, task: Task) -> None:
        view = task.view
        self._write(INSERT_TASK, (task.id, task.resource, task.owner, task.account, task.priority, task.payload.kind.value,
                                  codec.dump(task.payload), task.shots, task.lease_id, task.slurm_job_id,
                                  task.client_request_id, view.state.value, view.created_at))
        self._write("INSERT INTO transitions VALUES (?, ?, ?, ?, ?)",
                    (task.id, view.state.value, view.created_at, "", None))

    def task_submitting(self, task: Task) -> None:
        self._write("UPDATE tasks SET state = ? WHERE id = ?", (SUBMITTING, task.id))

    def task_changed(self, task: Task) -> None:
        view = task.view
        result = task.result
        payload = codec.dump(task.payload) if view.state.terminal else None  # emptied: only its kind stays
        self._write(UPDATE_TASK, (view.state.value, view.started_at, view.ended_at, view.reason, task.remote_ref,
                                  result.data if result else None, result.content_type if result else None,
                                  len(result.data) if result else 0, task.logs, payload, task.id))
        self._write("INSERT INTO transitions VALUES (?, ?, ?, ?, ?)",
                    (task.id, view.state.value, view.ended_at or view.started_at or time.time(), view.reason,
                     task.remote_ref))

    def task_ref(self, task: Task) -> None:
        self._write("UPDATE tasks SET remote_ref = ? WHERE id = ?", (task.remote_ref, task.id))

    def job_released(self, task: Task) -> None:
        self._write("UPDATE tasks SET released = 1 WHERE id = ?", (task.id,))

    def lease_granted(self, lease: Lease) -> None:
        self._write("INSERT OR REPLACE INTO leases (id, token, resource, owner, slurm_job_id, created_at, expires_at, "
                    "account) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (lease.id, lease.token, lease.resource, lease.owner, lease.slurm_job_id, lease.created_at,
                     lease.expires_at, lease.account))

    def lease_ended(self, lease: Lease, reason: str) -> None:
        self._write("DELETE FROM leases WHERE id = ?", (lease.id,))

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        self._enqueued += 1
        self._pending.put((sql, params))

    # -- the writer thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._conn is not None and self._loop is not None
        batch: list[tuple[str, tuple[Any, ...]]] = []
        stopping = False
        done = 0
        delay = 0.05
        while True:
            if not batch and not stopping:
                stopping = self._take(batch)
            if not batch and stopping:
                return
            try:
                self._commit(batch)
            except sqlite3.Error as exc:
                message = (f"the journal {self.path} cannot be written ({exc}); free space on its filesystem or "
                           f"make {self.path.parent} writable: no new tasks are taken until it can be written")
                if message != self.error:
                    log.error("%s", message)
                self.error = message
                self._loop.call_soon_threadsafe(self._failed, message)
                if self._closing:
                    log.error("journal %s: %d write(s) lost at shutdown", self.path, len(batch))
                    return
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            if self.error:
                log.warning("the journal %s is written again", self.path)
                self.error = ""
            delay = 0.05
            done += len(batch)
            batch = []
            self._loop.call_soon_threadsafe(self._settle, done)

    def _take(self, batch: list[tuple[str, tuple[Any, ...]]]) -> bool:
        """Wait for writes and take every one pending (up to MAX_BATCH); True when ``close`` was called."""
        item = self._pending.get()
        while item is not None:
            batch.append(item)
            if len(batch) >= MAX_BATCH:
                return False
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                return False
        return True

    def _commit(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        assert self._conn is not None
        conn = self._conn
        clean = time.monotonic() - self._cleaned_at >= self.cleanup_interval
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in batch:
                conn.execute(sql, params)
            if clean:
                self._clean(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if clean:
            self._cleaned_at = time.monotonic()

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
        for task_id in doomed:
            conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
            conn.execute("DELETE FROM transitions WHERE task_id = ?", (task_id,))
        if doomed:
            log.info("journal %s: dropped %d finished task(s) past retention", self.path, len(doomed))

    # -- back on the event loop --------------------------------------------------------------------------------

    def _settle(self, done: int) -> None:
        self._committed = done
        waiting = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if target <= done:
                waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._waiters = waiting

    def _failed(self, message: str) -> None:
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(Unavailable(message))
        self._waiters = []


def _read(conn: sqlite3.Connection) -> Recovered:
    recovered = Recovered()
    now = time.time()
    conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
    for row in conn.execute("SELECT id, token, resource, owner, slurm_job_id, created_at, expires_at, account "
                            "FROM leases"):
        recovered.leases.append(Lease(id=row[0], token=row[1], resource=row[2], owner=row[3], slurm_job_id=row[4],
                                      created_at=row[5], expires_at=row[6], account=row[7]))
    conn.row_factory = sqlite3.Row
    try:
        for row in conn.execute("SELECT * FROM tasks ORDER BY rowid"):
            task = _task(row)
            recovered.tasks.append(task)
            if task.state.terminal and row["remote_ref"] and not row["released"]:
                recovered.held.add(task.id)
            if row["state"] == SUBMITTING:
                recovered.submitting.add(task.id)
    finally:
        conn.row_factory = None
    return recovered


def _task(row: sqlite3.Row) -> Task:
    """A task as the journal left it: QUEUED (also when it was being submitted), RUNNING or finished."""
    task = Task(resource=row["resource"], owner=row["owner"], payload=codec.load(row["payload_kind"], row["payload"]),
                shots=row["shots"], lease_id=row["lease_id"], slurm_job_id=row["slurm_job_id"],
                client_request_id=row["client_request_id"], id=row["id"], remote_ref=row["remote_ref"],
                logs=row["logs"], priority=row["priority"], account=row["account"])
    if row["result"] is not None:
        task.result = Result(bytes(row["result"]), row["result_type"])
    queued = replace(task.history[0], created_at=row["created_at"])
    history = [queued]
    if row["started_at"] is not None:
        history.append(replace(queued, state=TaskState.RUNNING, started_at=row["started_at"]))
    state = TaskState.QUEUED if row["state"] == SUBMITTING else TaskState(row["state"])
    if state.terminal:
        history.append(replace(history[-1], state=state, reason=row["reason"], ended_at=row["ended_at"]))
    task.history = history
    return task
