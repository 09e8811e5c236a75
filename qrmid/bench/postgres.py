"""Benchmark of cluster mode's PostgreSQL store, run by hand:
``python -m qrmid.bench.postgres [--dsn "host=... dbname=... user=..." [--password-file FILE]]``.

In one run, against qrmid processes on Unix sockets with ``noop`` resources, the PostgreSQL store against the
SQLite journal (the baseline, each fsync'd on commit):

- tasks/s end to end (StartTask, WatchTask to the end, GetTaskResult) and StartTask calls/s;
- recovery: ``kill -9`` a daemon holding 1,000 tasks (half finished, half queued), restart it, and time from exec
  to SERVING with every task back.

Without ``--dsn`` it starts a private PostgreSQL server (fsync on) for the run; else give it a database of its own,
on a server with its usual durability (fsync on): its tables are emptied before each measure.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import click
import psycopg
from rich.console import Console
from rich.table import Table

from qrmid.bench.journal import RESOURCES, _fill, _rate_rows, _rate_runs, _restored
from qrmid.bench.pg_server import private_database
from qrmid.bench.process import QrmidProcess
from qrmid.bench.timing import spread

TABLES = "tasks, leases, drains, usage"  # emptied with what refers to them


def qrmid_process(scratch: Path, store: str | None) -> QrmidProcess:
    """A qrmid process on its own socket; its journal, or the PostgreSQL store whose ``[cluster]`` lines are
    ``store``."""
    scratch.mkdir(parents=True, exist_ok=True)
    socket, config = scratch / "qrmid.sock", scratch / "qrmid.toml"
    config.touch(mode=0o600)
    config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[tasks]\nretain = 1000000\n'
                      f'[journal]\npath = "{scratch / "journal.db"}"\n[limits]\ncalls_per_second = 0\n'
                      f'streams_per_client = 0\n{store or ""}{RESOURCES}')
    return QrmidProcess(config, socket)


def _empty(dsn: str, password: str) -> None:
    with psycopg.connect(dsn, password=password or None, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('tasks')").fetchone() != (None,):
            conn.execute(f"TRUNCATE {TABLES} CASCADE")


async def _recovery(scratch: Path, store: str | None, tasks: int, empty: Callable[[], None]) -> list[float]:
    """Three times: exec to SERVING after a ``kill -9`` with ``tasks`` tasks to restore."""
    empty()
    daemon = qrmid_process(scratch, store)
    await asyncio.to_thread(daemon.start)
    ids = await _fill(daemon.address, tasks)
    times = []
    for _ in range(3):
        daemon.kill()
        times.append(await asyncio.to_thread(daemon.start))
        if (restored := await _restored(daemon.address, ids)) != len(ids):
            raise SystemExit(f"only {restored} of {len(ids)} tasks came back after kill -9")
    daemon.kill()  # the day-long task is not waited for
    return times


@click.command()
@click.option("--dsn", default=None, help="libpq connection string of a database for the benchmark "
              "[default: a private PostgreSQL server, fsync on, started for the run and removed after]")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="its password on the first line (mode 0600); else libpq's passfile")
@click.option("--seconds", default=5.0, help="duration of each throughput run")
@click.option("--clients", default=16, help="concurrent callers for the throughput runs")
@click.option("--tasks", default=1000, help="tasks to restore for the recovery measure")
def main(dsn: str | None, password_file: Path | None, seconds: float, clients: int, tasks: int) -> None:
    """Measure the PostgreSQL store against the SQLite journal, in one run."""
    if dsn is not None:
        _run(dsn, password_file, seconds, clients, tasks)
        return
    with private_database() as (private_dsn, private_password):
        _run(private_dsn, private_password, seconds, clients, tasks)


def _run(dsn: str, password_file: Path | None, seconds: float, clients: int, tasks: int) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="qp"))
    password = password_file.read_text().splitlines()[0] if password_file else ""
    store = f'[cluster]\ndsn = "{dsn}"\nmember = "bench"\n' + \
        (f'password_file = "{password_file.resolve()}"\n' if password_file else "")

    def empty() -> None:
        _empty(dsn, password)

    def daemon(postgres: bool, turn: int) -> QrmidProcess:
        empty()
        return qrmid_process(scratch / f"rate-{postgres}-{turn}", store if postgres else None)

    rates = _rate_runs(daemon, seconds, clients)
    recovery = {postgres: asyncio.run(_recovery(scratch / f"recovery-{postgres}", store if postgres else None, tasks,
                                                empty)) for postgres in (False, True)}

    table = Table("measure", "PostgreSQL store", "SQLite journal (baseline)", "ratio",
                  title="qrmid PostgreSQL store benchmark")
    _rate_rows(table, rates, clients)
    table.add_row(f"exec to SERVING after kill -9, {tasks} tasks restored (min–median–max of 3)",
                  spread(recovery[True], "ms", 1e3), spread(recovery[False], "ms", 1e3),
                  f"{statistics.median(recovery[True]) / statistics.median(recovery[False]):.2f}x")
    Console(width=150).print(table)  # never cut a figure, in a terminal or a pipe


if __name__ == "__main__":
    main()
