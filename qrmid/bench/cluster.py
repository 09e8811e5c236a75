"""Benchmark of cluster mode, run by hand: ``python -m qrmid.bench.cluster [--dsn DSN [--password-file FILE]]``.

In one run, a cluster of three members (m1, m2, m3) on one PostgreSQL database against a single daemon on its
SQLite journal (the baseline), each a qrmid process on its own Unix socket with the same ``noop`` resources, the two
sides alternating three times:

- StartTask and GetTask latency (p50, p99) of sequential calls, on the cluster round-robin over the members;
- tasks/s end to end (StartTask, WatchTask to the end, GetTaskResult), the concurrent callers spread over the members;
- watch latency: from a task's RUNNING on its dispatcher (its ``start_time``, same machine clock) to the arrival of
  the RUNNING message of a WatchTask on a member that does not dispatch it (on the single daemon: on itself).

Then failover, five times: with tasks flowing on the other members, ``kill -9`` the member dispatching ``noop`` and
time until the first task starts RUNNING after it (the successor's first dispatch), against a single daemon killed
the same way and started again at once.

Without ``--dsn`` it starts a private PostgreSQL server (fsync on) for the run; else give it a database of its own,
on a server with its usual durability (fsync on): its tables are emptied before each measure, with every member
stopped.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import grpc
import psycopg
from rich.console import Console
from rich.table import Table

from qrmid.bench.daemon import _latencies, _p
from qrmid.bench.journal import PAYLOAD, TURNS
from qrmid.bench.pg_server import private_database
from qrmid.bench.postgres import _empty
from qrmid.bench.process import QrmidProcess
from qrmid.bench.throughput import throughput
from qrmid.bench.timing import spread
from qrmid.client import AsyncClient
from qrmid.store.members import DISPATCHERS
from qrmid.v1 import quantum_resources_pb2 as pb

MEMBERS = ("m1", "m2", "m3")
WATCHED_SLOTS, WATCHED_DELAY = 2, 0.25  # long enough RUNNING for its message to arrive before COMPLETED replaces it
RESOURCES = ('[[resources]]\ntype = "noop"\nname = "noop"\nslots = 8\ndelay_seconds = 0\nqueue_limit = 100000\n'
             f'[[resources]]\ntype = "noop"\nname = "watched"\nslots = {WATCHED_SLOTS}\n'
             f'delay_seconds = {WATCHED_DELAY}\nqueue_limit = 100000\n')
FAILOVERS = 5


def qrmid_process(scratch: Path, store: str) -> QrmidProcess:
    """A qrmid process on its own socket, config, journal path and log file, with ``store`` (a ``[cluster]`` section,
    or none for the journal) and the benchmark's resources."""
    scratch.mkdir(parents=True, exist_ok=True)
    socket, config = scratch / "qrmid.sock", scratch / "qrmid.toml"
    config.touch(mode=0o600)
    config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[tasks]\nretain = 1000000\n'
                      f'[journal]\nenabled = true\npath = "{scratch / "journal.db"}"\n[limits]\ncalls_per_second = 0\n'
                      f'streams_per_client = 0\n{store}{RESOURCES}')
    return QrmidProcess(config, socket, output=scratch / "qrmid.log")


@dataclass
class Side:
    """One side of the run: its qrmid processes (one daemon, or the members by name), started and stopped together."""

    processes: dict[str, QrmidProcess]
    empty: Callable[[], None] = lambda: None  # the store emptied, every process stopped

    @property
    def addresses(self) -> list[str]:
        return [process.address for process in self.processes.values()]

    def start(self) -> None:
        self.empty()
        for process in self.processes.values():
            process.start()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


@dataclass
class Figures:
    """What one turn of one side measured: latencies in seconds, tasks/s, and watches whose RUNNING was missed."""

    start: list[float] = field(default_factory=list)
    get: list[float] = field(default_factory=list)
    tasks_ps: float = 0.0
    watch: list[float] = field(default_factory=list)
    missed: int = 0


def _seconds(stamp: object) -> float:
    return stamp.ToNanoseconds() / 1e9  # type: ignore[attr-defined]


async def _watch_latency(client: AsyncClient, task_id: str, figures: Figures) -> None:
    """Watch the task to its end; seconds from its RUNNING to the arrival of its RUNNING message, when the watch
    saw it QUEUED first (a RUNNING that ended before its message came is counted as missed)."""
    queued = running = False
    async for task in client.watch(task_id):
        if task.state == pb.TASK_STATE_QUEUED:
            queued = True
        elif task.state == pb.TASK_STATE_RUNNING:
            running = True
            if queued:
                figures.watch.append(time.time() - _seconds(task.start_time))
    if not running:
        figures.missed += 1


async def _seen(client: AsyncClient, task_id: str, timeout: float = 30.0) -> None:
    """Wait until the member of ``client`` knows the task (another member's news of it travels through the
    database) and has seen it end."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.wait(task_id)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.01)


async def _measure(addresses: list[str], watcher: str, count: int, seconds: float, clients: int,
                   watched: int) -> Figures:
    """One turn of the measures on the members at ``addresses`` (round-robin), the watches on ``watcher``."""
    figures = Figures()
    members = [AsyncClient(address) for address in addresses]
    turns = itertools.cycle(members)
    figures.start = await _latencies(lambda: next(turns).start_task("noop", PAYLOAD), count)

    done = await members[0].start_task("noop", PAYLOAD)
    for member in members:  # completed, as every member sees it
        await _seen(member, done.id)
    figures.get = await _latencies(lambda: next(turns).task(done.id), count)

    callers = [AsyncClient(addresses[i % len(addresses)]) for i in range(clients)]

    async def one_task(client: AsyncClient) -> None:
        started = await client.start_task("noop", PAYLOAD)
        await client.wait(started.id)
        await client.result(started.id)

    figures.tasks_ps = await throughput([functools.partial(one_task, caller) for caller in callers], seconds)

    async with AsyncClient(watcher) as client, asyncio.TaskGroup() as group:
        for _ in range(watched):
            task = await client.start_task("watched", PAYLOAD)
            group.create_task(_watch_latency(client, task.id, figures))
    for member in [*members, *callers]:
        await member.close()
    return figures


def _dispatchers(dsn: str, password: str) -> dict[str, str]:
    """Resource -> the member dispatching it now, as the database's advisory locks show."""
    with psycopg.connect(dsn, password=password or None, autocommit=True) as conn:
        return {row[0]: row[1] for row in conn.execute(DISPATCHERS).fetchall()}


def _dispatcher(dsn: str, password: str, resource: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while (member := _dispatchers(dsn, password).get(resource)) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"no member dispatches {resource} after {timeout} s")
        time.sleep(0.1)
    return member


async def _failover(addresses: list[str], kill: Callable[[], None], callers: int,
                    restart: Callable[[], object] = lambda: None) -> float:
    """Seconds from the end of ``kill()`` (the process reaped: nothing it does is stamped later) until the first
    task starts RUNNING, ``restart()`` run in between, with ``callers`` callers on ``addresses`` running tasks back
    to back meanwhile (a call refused while no one serves is made again)."""
    starts: list[float] = []
    stop = asyncio.Event()

    async def flow(address: str) -> None:
        client = AsyncClient(address, timeout=120)
        while not stop.is_set():
            try:
                task = await client.wait((await client.start_task("noop", PAYLOAD)).id)
            except grpc.RpcError:  # a new channel, free of the old one's reconnect backoff
                await client.close()
                client = AsyncClient(address, timeout=120)
                await asyncio.sleep(0.01)
                continue
            if task.HasField("start_time"):
                starts.append(_seconds(task.start_time))
        await client.close()

    flows = [asyncio.create_task(flow(addresses[i % len(addresses)])) for i in range(callers)]
    await asyncio.sleep(1.0)  # tasks flowing
    await asyncio.to_thread(kill)
    killed = time.time()
    await asyncio.to_thread(restart)
    deadline = time.monotonic() + 300
    while not any(start > killed for start in starts):
        if time.monotonic() > deadline or any(flow.done() for flow in flows):
            stop.set()
            await asyncio.gather(*flows)  # a flow's own error, else:
            raise SystemExit("no task started RUNNING within 300 s of kill -9")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # tasks that started first may end later
    stop.set()
    await asyncio.gather(*flows)
    return min(start for start in starts if start > killed) - killed


def _cluster_failovers(side: Side, dsn: str, password: str, callers: int) -> list[float]:
    """``FAILOVERS`` times: kill -9 the member dispatching ``noop`` while tasks flow on the others; the killed member
    is started again between rounds."""
    side.start()
    times = []
    try:
        for _ in range(FAILOVERS):
            victim = side.processes[_dispatcher(dsn, password, "noop")]
            survivors = [process.address for process in side.processes.values() if process is not victim]
            times.append(asyncio.run(_failover(survivors, victim.kill, callers)))
            victim.start()
    finally:
        side.stop()
    return times


def _restart_times(side: Side, callers: int) -> list[float]:
    """``FAILOVERS`` times: kill -9 the single daemon while tasks flow on it, and start it again at once."""
    (daemon,) = side.processes.values()
    side.start()
    try:
        return [asyncio.run(_failover([daemon.address], daemon.kill, callers, daemon.start))
                for _ in range(FAILOVERS)]
    finally:
        side.stop()


def _row(table: Table, measure: str, values: dict[bool, list[float]], unit: str, scale: float,
         notes: dict[bool, str] | None = None) -> None:
    """A row of ``table``: each side's ``values`` (cluster: True) as min–median–max, and the ratio of the medians."""
    cells = [spread(values[side], unit, scale) + (notes or {}).get(side, "") for side in (True, False)]
    table.add_row(measure, *cells, f"{statistics.median(values[True]) / statistics.median(values[False]):.2f}x")


@click.command()
@click.option("--dsn", default=None, help="libpq connection string of a database for the benchmark "
              "[default: a private PostgreSQL server, fsync on, started for the run and removed after]")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="its password on the first line (mode 0600); else libpq's passfile")
@click.option("--count", default=1000, help="sequential calls for each latency figure")
@click.option("--seconds", default=5.0, help="duration of each throughput run")
@click.option("--clients", default=16, help="concurrent callers for the throughput runs")
@click.option("--watched", default=100, help="tasks watched for the watch latency")
@click.option("--callers", default=4, help="callers running tasks during a failover")
def main(dsn: str | None, password_file: Path | None, count: int, seconds: float, clients: int, watched: int,
         callers: int) -> None:
    """Measure a 3-member cluster on PostgreSQL against a single daemon on its SQLite journal, in one run."""
    if dsn is not None:
        _run(dsn, password_file, count, seconds, clients, watched, callers)
        return
    with private_database() as (private_dsn, private_password):
        _run(private_dsn, private_password, count, seconds, clients, watched, callers)


def _run(dsn: str, password_file: Path | None, count: int, seconds: float, clients: int, watched: int,
         callers: int) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="qc"))
    password = password_file.read_text().splitlines()[0] if password_file else ""
    secret = f'password_file = "{password_file.resolve()}"\n' if password_file else ""
    empty = functools.partial(_empty, dsn, password)

    def make(clustered: bool, run: str) -> Side:
        """Fresh processes: the cluster's members on the emptied database, or a daemon on a new journal."""
        if not clustered:
            return Side({"single": qrmid_process(scratch / f"{run}-single", "")})
        return Side({name: qrmid_process(scratch / f"{run}-{name}",
                                         f'[cluster]\ndsn = "{dsn}"\nmember = "{name}"\n{secret}')
                     for name in MEMBERS}, empty)

    figures: dict[bool, list[Figures]] = {False: [], True: []}
    for turn in range(TURNS):
        for clustered in (False, True):
            side = make(clustered, f"turn{turn}")
            side.start()
            try:
                watcher = side.addresses[0]
                if clustered:  # a member that does not dispatch the watched tasks
                    dispatcher = _dispatcher(dsn, password, "watched")
                    watcher = next(p.address for name, p in side.processes.items() if name != dispatcher)
                figures[clustered].append(asyncio.run(_measure(side.addresses, watcher, count, seconds, clients,
                                                               watched)))
            finally:
                side.stop()
    failovers = _cluster_failovers(make(True, "failover"), dsn, password, callers)
    restarts = _restart_times(make(False, "failover"), callers)
    empty()

    table = Table("measure", "cluster: 3 members, PostgreSQL", "single daemon, SQLite journal (baseline)", "ratio",
                  title=f"qrmid cluster benchmark (min–median–max of {TURNS} runs)")
    for name, key in (("StartTask", "start"), ("GetTask", "get")):
        for q in (50, 99):
            _row(table, f"{name} latency p{q}, {count} sequential calls (cluster: round-robin over the members)",
                 {side: [_p(getattr(f, key), q) for f in figures[side]] for side in figures}, "µs", 1e6)
    _row(table, f"tasks end to end (noop), {clients} callers (cluster: spread over the members)",
         {side: [f.tasks_ps for f in figures[side]] for side in figures}, "tasks/s", 1.0)
    missed = {side: f" ({n} RUNNING not seen)" if (n := sum(f.missed for f in figures[side])) else ""
              for side in figures}
    for q in (50, 99):
        _row(table, f"watch latency p{q}: RUNNING on the dispatcher to its WatchTask message (cluster: on another "
             f"member), {watched} tasks", {side: [_p(f.watch, q) for f in figures[side]] for side in figures},
             "µs", 1e6, missed)
    _row(table, f"kill -9 of the dispatcher to the first task RUNNING, tasks flowing (min–median–max of {FAILOVERS}; "
         "baseline: the daemon started again at once)", {True: failovers, False: restarts}, "ms", 1e3)
    Console(width=150).print(table)  # never cut a figure, in a terminal or a pipe


if __name__ == "__main__":
    main()
