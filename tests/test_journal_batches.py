"""The journal's batched writes: a batch merged into statements of many rows writes exactly what its writes one by one
would, and under a burst of concurrent tasks a ``kill -9`` loses no task whose start was answered, shows no state the
journal did not have, and runs no finished task again."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_recovery import Qrmid, finish

from qrmid.client import AsyncClient, pulser_payload
from qrmid.store.commits import Write
from qrmid.store.journal import INSERT_TASK, INSERT_TRANSITION, SCHEMA, SUBMITTING, UPDATE_TASK, merged
from qrmid.v1 import quantum_resources_pb2 as pb

TABLES = ("tasks", "transitions")


def _random_batch(rng: random.Random, size: int) -> list[Write]:
    """Writes as the journal enqueues them for a few tasks' lives, interleaved: inserts, state updates (some with a
    payload), transitions, a submitting mark and a reference, and a refused task's deletes."""
    batch: list[Write] = []
    inserted: list[str] = []
    for n in range(size):
        roll = rng.random()
        if roll < 0.2 or not inserted:
            task_id = f"t{n}"
            inserted.append(task_id)
            batch.append((INSERT_TASK, (task_id, "noop", "ann", "", "", "pulser_sequence", f"p{n}".encode(), n, "", "",
                                        "", "queued", float(n)), task_id))
            continue
        task_id = rng.choice(inserted)
        if roll < 0.5:
            payload = rng.choice([None, f"emptied{n}".encode()])
            batch.append((UPDATE_TASK, (rng.choice(["running", "completed", "failed"]), float(n), rng.choice([None, n + 0.5]),
                                        f"why {n}", rng.choice([None, f"ref{n}"]), rng.choice([None, b"result"]),
                                        "application/json", n, f"logs {n}", payload, task_id), task_id))
        elif roll < 0.75:
            batch.append((INSERT_TRANSITION, (task_id, "running", float(n), "", None), task_id))
        elif roll < 0.85:
            batch.append(("UPDATE tasks SET state = ? WHERE id = ?", (SUBMITTING, task_id), task_id))
        elif roll < 0.95:
            batch.append(("UPDATE tasks SET remote_ref = ? WHERE id = ?", (f"r{n}", task_id), task_id))
        else:
            batch.append(("DELETE FROM tasks WHERE id = ?", (task_id,), ""))
            batch.append(("DELETE FROM transitions WHERE task_id = ?", (task_id,), ""))
    return batch


def _contents(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in TABLES}


def _journal(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA)
    return conn


@pytest.mark.parametrize("seed", range(20))
def test_merged_statements_write_what_the_writes_one_by_one_write(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    batch = _random_batch(rng, rng.randint(1, 300))
    variables = rng.choice([13, 40, 999, 250_000])  # a statement of one row up to all of them
    one_by_one, batched = _journal(tmp_path / "one.db"), _journal(tmp_path / "many.db")
    for sql, params, _ in batch:
        one_by_one.execute(sql, params)
    statements = merged(batch, variables)
    for sql, params in statements:
        assert len(params) <= variables
        batched.execute(sql, params)
    assert _contents(batched) == _contents(one_by_one)
    assert len(statements) <= len(batch)


def test_a_burst_of_hot_path_writes_becomes_three_statements() -> None:
    batch: list[Write] = []
    for n in range(50):
        task_id = f"t{n}"
        batch.append((INSERT_TASK, (task_id, "noop", "ann", "", "", "pulser_sequence", b"{}", 1, "", "", "", "queued",
                                    1.0), task_id))
        batch.append((INSERT_TRANSITION, (task_id, "queued", 1.0, "", None), task_id))
        for state in ("running", "completed"):
            batch.append((UPDATE_TASK, (state, 1.0, None, "", None, None, None, 0, "", None, task_id), task_id))
            batch.append((INSERT_TRANSITION, (task_id, state, 1.0, "", None), task_id))
    assert [sql.split()[0] for sql, _ in merged(batch, 250_000)] == ["INSERT", "UPDATE", "INSERT"]


async def test_kill_9_during_a_burst_loses_no_answered_task_and_repeats_no_finished_one() -> None:
    """Many concurrent callers, so that starts, runs and ends share commits; the daemon is killed while tasks are
    queued, running and finished. Every task whose start was answered comes back, every state a caller saw was in
    the journal, and no finished task runs again."""
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "noop"\nslots = 8\ndelay_seconds = 0.2\n')
    payload = pulser_payload({"sequence": "x"}, 1)
    seen: dict[str, set[int]] = {}
    try:
        daemon.start()
        async with AsyncClient(daemon.address, timeout=30) as qrmid:
            async def start(n: int) -> str:
                return (await qrmid.start_task("noop", payload, request_id=f"burst-{n}")).id

            ids = await asyncio.gather(*(start(n) for n in range(120)))

            async def watch(task_id: str) -> None:
                async for view in qrmid.watch(task_id):
                    seen.setdefault(task_id, set()).add(view.state)

            watchers = [asyncio.create_task(watch(task_id)) for task_id in ids]
            while sum(pb.TASK_STATE_COMPLETED in states for states in seen.values()) < 20 or \
                    not any(states == {pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING} for states in seen.values()):
                await asyncio.sleep(0.01)
            daemon.kill()
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        journal = sqlite3.connect(daemon.journal)
        stored = dict(journal.execute("SELECT id, state FROM tasks").fetchall())
        ended = dict(journal.execute("SELECT id, ended_at FROM tasks WHERE ended_at IS NOT NULL").fetchall())
        journal.close()
        assert set(stored) == set(ids), "every task whose start was answered is in the journal"
        for task_id, states in seen.items():
            if pb.TASK_STATE_COMPLETED in states:
                assert stored[task_id] == "completed", f"task {task_id} was shown completed before it was journaled"
            elif pb.TASK_STATE_RUNNING in states:
                assert stored[task_id] in ("running", "completed"), \
                    f"task {task_id} was shown running before it was journaled ({stored[task_id]})"

        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            again = [(await qrmid.start_task("noop", payload, request_id=f"burst-{n}")).id for n in range(120)]
        assert again == ids, "a retried request id gets the task made before the crash"
        finished = await finish(daemon.address, ids)
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * len(ids)
        for task in finished:
            if task.id in ended:
                assert task.end_time.ToNanoseconds() == int(ended[task.id] * 1e9), \
                    f"finished task {task.id} ran again after the restart"
    finally:
        daemon.stop()


async def test_a_long_tasks_start_is_shown_while_it_runs_with_no_other_write_to_share_a_commit() -> None:
    """A task's start waits for another write to commit with; when none comes, it is committed on its own, and
    shown, while the task still runs."""
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "noop"\ndelay_seconds = 3\n')
    try:
        daemon.start()
        async with AsyncClient(daemon.address, timeout=30) as qrmid:
            task = await qrmid.start_task("noop", pulser_payload({"sequence": "x"}, 1))
            states: list[int] = []
            meanwhile: int | None = None  # the task's state as GetTask gives it when its start is shown
            async for view in qrmid.watch(task.id):
                states.append(view.state)
                if view.state == pb.TASK_STATE_RUNNING:
                    meanwhile = (await qrmid.task(task.id)).state
        assert states == [pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING, pb.TASK_STATE_COMPLETED]
        assert meanwhile == pb.TASK_STATE_RUNNING, "the start was shown only with the end"
        journal = sqlite3.connect(daemon.journal)
        transitions = journal.execute("SELECT state FROM transitions WHERE task_id = ? ORDER BY rowid",
                                      (task.id,)).fetchall()
        journal.close()
        assert transitions == [("queued",), ("running",), ("completed",)]
    finally:
        daemon.stop()
