"""Moving a single daemon's SQLite journal into a cluster's PostgreSQL store.

The journal is opened as a daemon opens it (its lock taken, unreadable rows quarantined and left out), each task,
lease and drain read back is turned into the PostgreSQL store's own writes by its event methods, the journal's
transitions are copied as recorded, and everything is committed in one transaction, after the schema is created
or upgraded. A database that already holds any of the tasks or leases is refused: nothing is merged.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from qrmid.core.tasks import TaskState
from qrmid.store import postgres, schema
from qrmid.store.journal import Journal, JournalError, Quarantined, Recovered


class ImportRefused(Exception):
    """The journal cannot be imported; the message says why and what to do (and never holds the password)."""


@dataclass
class Imported:
    """What was moved, and the quarantined journal rows that were not."""

    tasks: Counter[str] = field(default_factory=Counter)  # by state
    transitions: int = 0
    results: int = 0
    request_ids: int = 0
    remote_refs: int = 0
    leases: int = 0
    drains: int = 0
    windows: int = 0
    allocations: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"tasks": sum(self.tasks.values()), "tasks_by_state": dict(sorted(self.tasks.items())),
                "transitions": self.transitions, "results": self.results, "request_ids": self.request_ids,
                "remote_refs": self.remote_refs, "leases": self.leases, "drains": self.drains,
                "windows": self.windows, "allocations": self.allocations,
                "quarantined": [{"table": row.source, "row": row.row_id, "key": row.key, "reason": row.reason}
                                for row in self.quarantined]}


class _Writes(postgres.PostgresStore):
    """The store's event methods, collecting the writes they make instead of committing them."""

    def __init__(self) -> None:
        super().__init__("", member="import")
        self.writes: list[postgres.Write] = []

    def _write(self, sql: str, params: tuple[Any, ...] | dict[str, Any], task_id: str = "", fence: Any = None,
               notice: str = "") -> None:
        self.writes.append(postgres.Write(sql, params, task_id))


def import_journal(path: Path, dsn: str, password_file: Path | None, connect_timeout: float) -> Imported:
    """Blocking: move the journal at ``path`` into the PostgreSQL database ``dsn``; ImportRefused when it cannot."""
    if not path.is_file():
        raise ImportRefused(f"{path}: no such journal file; give the [journal] path of the daemon to import")
    try:
        password = postgres.read_password(password_file) if password_file else ""
    except postgres.StoreError as exc:
        raise ImportRefused(str(exc)) from None
    conninfo = make_conninfo(dsn, connect_timeout=max(2, round(connect_timeout)), application_name="qrmid import",
                             **({"password": password} if password else {}))
    _check_stopped(path)
    journal = Journal(path)
    try:
        recovered = journal.open()
    except JournalError as exc:
        raise ImportRefused(str(exc)) from None
    try:  # the journal stays locked until the commit: no daemon starts on it meanwhile
        writes, imported = _replay(recovered, _transitions(path, [task.id for task in recovered.tasks]))
        _store(conninfo, postgres.safe_dsn(dsn), recovered, writes)
    finally:
        journal.close()
    return imported


def _store(conninfo: str, dsn: str, recovered: Recovered, writes: list[postgres.Write]) -> None:
    """Create or upgrade the schema, then commit ``writes``; ImportRefused, without the password, when it fails."""
    where = f"PostgreSQL at {dsn}"
    try:
        schema.migrate(conninfo)
        with psycopg.connect(conninfo) as conn:
            _commit(conn, where, recovered, writes)
    except schema.SchemaError as exc:
        raise ImportRefused(f"{where}: {exc}") from None
    except psycopg.Error as exc:
        raise ImportRefused(f"cannot import into {where}: {_scrub(exc, conninfo)}; nothing was imported") from None


def _check_stopped(path: Path) -> None:
    """Refuse while a daemon holds the journal's lock (the journal itself would say only that it is in use)."""
    lock = Path(f"{path}.lock")
    if not lock.exists():
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ImportRefused(f"the journal {path} is in use by a running qrmid: stop that daemon, then import") \
            from None
    finally:
        os.close(fd)  # Journal.open takes the lock again


def _transitions(path: Path, task_ids: list[str]) -> list[tuple[Any, ...]]:
    """The journal's transitions of ``task_ids``, as recorded (the journal does not read them back)."""
    wanted = set(task_ids)
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT task_id, state, at, reason, remote_ref FROM transitions ORDER BY rowid")
        return [row for row in rows if row[0] in wanted]


def _replay(recovered: Recovered, transitions: list[tuple[Any, ...]]) -> tuple[list[postgres.Write], Imported]:
    """The store's writes of everything ``recovered`` holds, with the journal's ``transitions`` in place of those
    the events would derive."""
    store = _Writes()
    imported = Imported(transitions=len(transitions), leases=len(recovered.leases), drains=len(recovered.drains),
                        windows=len(recovered.windows), allocations=len(recovered.allocations),
                        quarantined=recovered.quarantined)
    for task in recovered.tasks:
        state = task.view.state
        store.task_queued(task)
        if task.id in recovered.submitting:
            store.task_submitting(task)
        if state is not TaskState.QUEUED:
            store.task_changed(task)
        elif task.remote_ref:
            store.task_ref(task)
        if state.terminal and task.remote_ref and task.id not in recovered.held:
            store.job_released(task)
        imported.tasks[state.value] += 1
        imported.results += task.result is not None
        imported.request_ids += bool(task.client_request_id)
        imported.remote_refs += task.remote_ref is not None
    for lease in recovered.leases:
        store.lease_granted(lease)
    for name, reason in recovered.drains.items():
        store.resource_drained(name, reason)
    for window in recovered.windows:
        store.window_created(window)
    for allocation in recovered.allocations:
        store.allocation_set(allocation)
    for used in recovered.used:  # the usage of the tasks retention dropped, by day
        store.writes.append(postgres.Write(postgres.ROLL_UP, (used.account, used.resource, datetime.fromtimestamp(
            used.at).strftime("%Y-%m-%d"), used.seconds, used.shots)))
    writes = [write for write in store.writes if write[0] != postgres.INSERT_TRANSITION]
    writes += [postgres.Write(postgres.INSERT_TRANSITION, row, row[0]) for row in transitions]
    return writes, imported


def _commit(conn: psycopg.Connection[Any], where: str, recovered: Recovered, writes: list[postgres.Write]) -> None:
    """All ``writes`` in one transaction, unless a member uses the database or it holds any task or lease."""
    with conn.transaction():
        key = postgres.MEMBER_LOCK
        if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()[0]:  # type: ignore[index]
            holder = conn.execute(postgres.HOLDER, (key >> 32, key & 0xFFFFFFFF)).fetchone()
            raise ImportRefused(f"{where} is in use by {holder[0] if holder else 'a qrmid member'}: stop the members "
                                "using it, then import")
        clashes = [(what, conn.execute(f"SELECT count(*) FROM {table} WHERE id = ANY(%s)",  # table: one of ours
                                       (ids,)).fetchone()[0])  # type: ignore[index]
                   for what, table, ids in (("task", "tasks", [task.id for task in recovered.tasks]),
                                            ("lease", "leases", [lease.id for lease in recovered.leases]))]
        if held := [f"{count} of its {what}s" for what, count in clashes if count]:
            raise ImportRefused(f"{where} already holds {' and '.join(held)}: was this journal imported before? "
                                "Nothing was imported; nothing is merged into a database that holds them")
        with conn.pipeline():
            for write in writes:
                conn.execute(write.sql, write.params)


def _scrub(exc: psycopg.Error, conninfo: str) -> str:
    """An error's text on one line, the password blanked should the server or driver echo it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = conninfo_to_dict(conninfo).get("password")
    return text.replace(str(password), "***") if password else text
