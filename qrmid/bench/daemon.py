"""Benchmark of the daemon itself, run by hand: ``python -m qrmid.bench``.

In one run, against servers in their own processes on Unix sockets:

- baseline: a bare grpc.aio echo server (the cost of gRPC itself on this machine);
- ``GetTask`` on qrmid: latency of one caller, and throughput of 16 concurrent callers, alternating with the
  baseline round by round;
- end to end: tasks/s through qrmid on the ``noop`` backend (``AsyncClient.run``: start, wait for the end, fetch the
  result), and the daemon's CPU time per task (its process's and its workers', read from ``/proc`` before and after
  each run, divided by the tasks completed), with the journal on and with it off: the two daemons run side by side
  and are measured round by round, alternately.

Every figure is printed with its ratio to the baseline measured in the same run; repeated ones as min–median–max.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import click
import grpc
from rich.console import Console
from rich.table import Table

from qrmid.bench.process import QrmidProcess
from qrmid.bench.throughput import counted, throughput
from qrmid.bench.timing import cpu_seconds, spread
from qrmid.client import AsyncClient, pulser_payload

ECHO = "/bench.Echo/Echo"
PAYLOAD = pulser_payload({}, 1)


async def _echo_server(socket: str) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    await server.wait_for_termination()


def _spawn_echo(socket: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "qrmid.bench", "--echo-server", str(socket)])
    deadline = time.monotonic() + 120
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the echo server did not start")
        time.sleep(0.05)
    return process


async def _latencies(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    for _ in range(min(200, count)):
        await call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if q < 100 else max(values)


def _daemon(scratch: Path, journal: bool) -> QrmidProcess:
    """A qrmid process with a ``noop`` resource, on its own socket and journal (or none), without rate limits."""
    scratch.mkdir(parents=True, exist_ok=True)
    socket, config = scratch / "qrmid.sock", scratch / "qrmid.toml"
    config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[tasks]\nretain = 1000000\n'
                      f'[journal]\nenabled = {"true" if journal else "false"}\npath = "{scratch / "journal.db"}"\n'
                      '[limits]\ncalls_per_second = 0\nstreams_per_client = 0\n'
                      '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 64\nqueue_limit = 100000\n')
    return QrmidProcess(config, socket)


async def _tasks(clients: list[AsyncClient], pid: int, seconds: float) -> tuple[float, float]:
    """(tasks/s end to end, daemon CPU seconds per task) with each of ``clients`` running no-op tasks back to back."""
    async def one_task(client: AsyncClient) -> None:
        await client.run("noop", PAYLOAD)

    before = cpu_seconds(pid)
    done, elapsed = await counted([functools.partial(one_task, client) for client in clients], seconds)
    return done / elapsed, (cpu_seconds(pid) - before) / done


Runs = dict[bool, list[tuple[float, float]]]  # (tasks/s, daemon CPU seconds per task) of each run: journal on, off


async def _measure(echo_socket: Path, daemons: dict[bool, QrmidProcess], count: int, seconds: float, clients: int,
                   rounds: int) -> tuple[dict[str, list[float]], Runs]:
    """Each figure of each round: GetTask against the echo baseline (by name), and the end-to-end runs."""
    channels = [grpc.aio.insecure_channel(f"unix:{echo_socket}") for _ in range(clients)]
    echoes = [channel.unary_unary(ECHO) for channel in channels]
    request = b"x" * 64
    qrmids = {journal: [AsyncClient(daemon.address) for _ in range(clients)] for journal, daemon in daemons.items()}
    on = qrmids[True]
    task, _ = await on[0].run("noop", PAYLOAD)
    figures: dict[str, list[float]] = {}
    for _ in range(rounds):  # the baseline and qrmid alternate
        base = await _latencies(lambda: echoes[0](request), count)
        get = await _latencies(lambda: on[0].task(task.id), count)
        for name, value in (("base_p50", _p(base, 50)), ("base_p99", _p(base, 99)), ("get_p50", _p(get, 50)),
                            ("get_p99", _p(get, 99))):
            figures.setdefault(name, []).append(value)
        figures.setdefault("base_rps", []).append(
            await throughput([functools.partial(echo, request) for echo in echoes], seconds))
        figures.setdefault("get_rps", []).append(
            await throughput([functools.partial(q.task, task.id) for q in on], seconds))

    runs: Runs = {False: [], True: []}
    for journal, daemon in daemons.items():  # warm-up
        await _tasks(qrmids[journal], _pid(daemon), min(seconds, 1.0))
    for _ in range(rounds):
        for journal, daemon in daemons.items():
            runs[journal].append(await _tasks(qrmids[journal], _pid(daemon), seconds))
    for channel in channels:
        await channel.close()
    for client in (*qrmids[False], *on):
        await client.close()
    return figures, runs


def _pid(daemon: QrmidProcess) -> int:
    assert daemon.process is not None
    return daemon.process.pid


@click.command()
@click.option("--count", default=3000, help="sequential calls for the latency figures")
@click.option("--seconds", default=5.0, help="duration of each throughput run")
@click.option("--clients", default=16, help="concurrent callers for the throughput runs")
@click.option("--rounds", default=3, help="rounds of each measure, the compared sides alternating")
@click.option("--echo-server", hidden=True, default=None)
def main(count: int, seconds: float, clients: int, rounds: int, echo_server: str | None) -> None:
    """Measure qrmid against a bare gRPC echo server, and with its journal against without, in the same run."""
    if echo_server:
        asyncio.run(_echo_server(echo_server))
        return
    scratch = Path(tempfile.mkdtemp(prefix="qb"))
    echo_socket = scratch / "echo.sock"
    echo = _spawn_echo(echo_socket)
    daemons = {False: _daemon(scratch / "off", journal=False), True: _daemon(scratch / "on", journal=True)}
    try:
        for daemon in daemons.values():
            daemon.start()
        r, runs = asyncio.run(_measure(echo_socket, daemons, count, seconds, clients, rounds))
    finally:
        for daemon in daemons.values():
            daemon.stop()
        echo.terminate()
        echo.wait()
    rates = {journal: [rate for rate, _ in runs[journal]] for journal in runs}
    cpus = {journal: [cpu for _, cpu in runs[journal]] for journal in runs}
    table = Table("measure (min–median–max)", "qrmid", "baseline (bare gRPC echo)", "ratio",
                  title=f"qrmid against a bare gRPC echo server, {rounds} alternating rounds")
    ms = 1e3

    def ratio(mine: list[float], base: list[float]) -> str:
        return f"{statistics.median(mine) / statistics.median(base):.2f}x"

    for figure, name in (("p50", "50"), ("p99", "99")):
        table.add_row(f"GetTask latency {figure}", spread(r[f"get_p{name}"], "ms", ms, 3),
                      spread(r[f"base_p{name}"], "ms", ms, 3), ratio(r[f"get_p{name}"], r[f"base_p{name}"]))
    table.add_row(f"GetTask throughput, {clients} clients", spread(r["get_rps"], "calls/s"),
                  spread(r["base_rps"], "calls/s"), ratio(r["get_rps"], r["base_rps"]))
    table.add_row(f"tasks end to end (noop, journal on), {clients} clients", spread(rates[True], "tasks/s"),
                  spread(r["base_rps"], "calls/s"), ratio(rates[True], r["base_rps"]))
    Console(width=150).print(table)  # never cut a figure, in a terminal or a pipe

    table = Table("measure (min–median–max)", "journal on", "journal off (baseline)", "ratio",
                  title=f"qrmid end to end, no-op tasks, {clients} clients, {rounds} alternating runs of {seconds:g} s")
    table.add_row("tasks end to end", spread(rates[True], "tasks/s"), spread(rates[False], "tasks/s"),
                  f"{statistics.median(rates[True]) / statistics.median(rates[False]):.2f}x")
    table.add_row("daemon CPU per task", spread(cpus[True], "ms", ms, 3), spread(cpus[False], "ms", ms, 3),
                  f"{statistics.median(cpus[True]) / statistics.median(cpus[False]):.2f}x")
    Console(width=150).print(table)  # never cut a figure, in a terminal or a pipe
