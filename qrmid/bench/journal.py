"""Benchmark of the journal, run by hand: ``python -m qrmid.bench.journal``.

In one run, against qrmid processes on Unix sockets with ``noop`` resources:

- tasks/s end to end (StartTask, WatchTask to the end, GetTaskResult) and StartTask calls/s, with the journal on
  and with it off: the ratio is the journal's cost;
- recovery: ``kill -9`` a daemon whose journal holds 1,000 tasks (half finished, half queued), restart it, and time
  from exec to SERVING with every task back, against the start of the same daemon on an empty journal.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from qrmid.bench.process import QrmidProcess
from qrmid.bench.throughput import throughput
from qrmid.bench.timing import spread
from qrmid.client import AsyncClient, pulser_payload

PAYLOAD = pulser_payload({}, 1)
# StartTask alone is measured onto 'stuck', whose queue grows by every call of the run (all from one user): its
# per-user queue limit is lifted, as a queue's depth no longer changes what a StartTask costs
RESOURCES = ('[[resources]]\ntype = "noop"\nname = "noop"\nslots = 64\nqueue_limit = 100000\n'
             '[[resources]]\ntype = "noop"\nname = "stuck"\nslots = 1\ndelay_seconds = 86400\nqueue_limit = 100000\n'
             'max_queued_per_owner = 0\n')

TURNS = 3  # runs of each side, alternating
Rates = dict[bool, list[tuple[float, float]]]  # (tasks/s, StartTask calls/s) of each run: measured (True), baseline


def qrmid_process(scratch: Path, journal: bool) -> QrmidProcess:
    """A qrmid process on its own socket and journal (or none), with the benchmark's resources."""
    scratch.mkdir(parents=True, exist_ok=True)
    socket, config = scratch / "qrmid.sock", scratch / "qrmid.toml"
    config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[tasks]\nretain = 1000000\n'
                      f'[journal]\nenabled = {"true" if journal else "false"}\n'
                      f'path = "{scratch / "journal.db"}"\n[limits]\ncalls_per_second = 0\nstreams_per_client = 0\n'
                      f'{RESOURCES}')
    return QrmidProcess(config, socket)


async def _rates(address: str, seconds: float, clients: int) -> tuple[float, float]:
    """(tasks/s end to end, StartTask calls/s) with ``clients`` concurrent callers."""
    qrmids = [AsyncClient(address) for _ in range(clients)]

    async def one_task(client: AsyncClient) -> None:
        started = await client.start_task("noop", PAYLOAD)
        await client.wait(started.id)
        await client.result(started.id)

    tasks_ps = await throughput([functools.partial(one_task, q) for q in qrmids], seconds)
    starts_ps = await throughput([functools.partial(q.start_task, "stuck", PAYLOAD) for q in qrmids], seconds)
    for client in qrmids:
        await client.close()
    return tasks_ps, starts_ps


def _rate_runs(daemon: Callable[[bool, int], QrmidProcess], seconds: float, clients: int) -> Rates:
    """The rates of the processes ``daemon(measured, turn)`` makes: baseline and measured alternately, ``TURNS``
    times each."""
    rates: Rates = {False: [], True: []}
    for turn in range(TURNS):
        for measured in (False, True):
            process = daemon(measured, turn)
            process.start()
            try:
                rates[measured].append(asyncio.run(_rates(process.address, seconds, clients)))
            finally:
                process.stop()
    return rates


def _rate_rows(table: Table, rates: Rates, clients: int) -> None:
    """Each side's rates as min–median–max, with the ratio of the medians, as rows of ``table``."""
    for i, (measure, unit) in enumerate(((f"tasks end to end (noop), {clients} clients", "tasks/s"),
                                         (f"StartTask, {clients} clients", "calls/s"))):
        measured, base = ([rate[i] for rate in rates[side]] for side in (True, False))
        table.add_row(measure, spread(measured, unit), spread(base, unit),
                      f"{statistics.median(measured) / statistics.median(base):.2f}x")


async def _fill(address: str, count: int) -> list[str]:
    """``count`` tasks: half completed on ``noop``, half queued behind a day-long task on ``stuck``."""
    async with AsyncClient(address) as qrmid:
        done = [(await qrmid.start_task("noop", PAYLOAD)).id for _ in range(count // 2)]
        for task_id in done:
            await qrmid.wait(task_id)
        waiting = [(await qrmid.start_task("stuck", PAYLOAD)).id for _ in range(count - len(done))]
    return done + waiting


async def _restored(address: str, ids: list[str]) -> int:
    async with AsyncClient(address) as qrmid:
        return sum([1 for task_id in ids if (await qrmid.task(task_id)).id == task_id])


@click.command()
@click.option("--seconds", default=5.0, help="duration of each throughput run")
@click.option("--clients", default=16, help="concurrent callers for the throughput runs")
@click.option("--tasks", default=1000, help="tasks in the journal for the recovery measure")
def main(seconds: float, clients: int, tasks: int) -> None:
    """Measure the journal's cost and the recovery time, against the same daemon without it, in one run."""
    scratch = Path(tempfile.mkdtemp(prefix="qj"))
    rates = _rate_runs(lambda journal, turn: qrmid_process(scratch / f"rate-{journal}-{turn}", journal), seconds,
                       clients)

    daemon = qrmid_process(scratch / "recovery", journal=True)
    daemon.start()
    ids = asyncio.run(_fill(daemon.address, tasks))
    recoveries, colds = [], []
    for turn in range(3):  # alternately: kill -9 and restart on the full journal, start on an empty one
        daemon.kill()
        recoveries.append(daemon.start())
        restored = asyncio.run(_restored(daemon.address, ids))
        if restored != len(ids):
            raise SystemExit(f"only {restored} of {len(ids)} tasks came back after kill -9")
        empty = qrmid_process(scratch / f"empty-{turn}", journal=True)
        colds.append(empty.start())
        empty.stop()
    daemon.kill()  # the day-long task is not waited for

    table = Table("measure", "journal on", "journal off (baseline)", "ratio", title="qrmid journal benchmark")
    _rate_rows(table, rates, clients)
    table.add_row(f"exec to SERVING after kill -9, {len(ids)} tasks restored (min–median–max of 3)",
                  spread(recoveries, "ms", 1e3), spread(colds, "ms", 1e3) + " (empty journal)",
                  f"{statistics.median(recoveries) / statistics.median(colds):.2f}x")
    Console(width=150).print(table)  # never cut a figure, in a terminal or a pipe


if __name__ == "__main__":
    main()
