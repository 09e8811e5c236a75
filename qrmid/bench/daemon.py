"""Benchmark of the daemon itself, run by hand: ``python -m qrmid.bench``.

In one run, against servers in their own processes on Unix sockets:

- baseline: a bare grpc.aio echo server (the cost of gRPC itself on this machine);
- ``GetTask`` on qrmid: latency of one caller, and throughput of 16 concurrent callers;
- end to end: tasks/s through qrmid on the ``noop`` backend (StartTask, WatchTask to the end, GetTaskResult).

Every figure is printed with its ratio to the baseline measured in the same run.
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

from qrmid.bench.throughput import throughput
from qrmid.client import AsyncClient, pulser_payload
from qrmid.emulators.launch import start_qrmid

ECHO = "/bench.Echo/Echo"


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


async def _measure(echo_socket: Path, qrmid_socket: Path, count: int, seconds: float, clients: int) -> dict[str, float]:
    channels = [grpc.aio.insecure_channel(f"unix:{echo_socket}") for _ in range(clients)]
    echoes = [channel.unary_unary(ECHO) for channel in channels]
    request = b"x" * 64
    base = await _latencies(lambda: echoes[0](request), count)
    base_rps = await throughput([functools.partial(echo, request) for echo in echoes], seconds)

    qrmids = [AsyncClient(f"unix:{qrmid_socket}") for _ in range(clients)]
    task = await qrmids[0].start_task("noop", pulser_payload({}, 1))
    await qrmids[0].wait(task.id)
    get = await _latencies(lambda: qrmids[0].task(task.id), count)
    get_rps = await throughput([functools.partial(q.task, task.id) for q in qrmids], seconds)

    async def one_task(client: AsyncClient) -> None:
        started = await client.start_task("noop", pulser_payload({}, 1))
        await client.wait(started.id)
        await client.result(started.id)

    tasks_ps = await throughput([functools.partial(one_task, q) for q in qrmids], seconds)
    for channel in channels:
        await channel.close()
    for client in qrmids:
        await client.close()
    return {"base_p50": _p(base, 50), "base_p99": _p(base, 99), "base_rps": base_rps,
            "get_p50": _p(get, 50), "get_p99": _p(get, 99), "get_rps": get_rps, "tasks_ps": tasks_ps}


@click.command()
@click.option("--count", default=3000, help="sequential calls for the latency figures")
@click.option("--seconds", default=5.0, help="duration of each throughput run")
@click.option("--clients", default=16, help="concurrent callers for the throughput runs")
@click.option("--echo-server", hidden=True, default=None)
def main(count: int, seconds: float, clients: int, echo_server: str | None) -> None:
    """Measure qrmid against a bare gRPC echo server in the same run."""
    if echo_server:
        asyncio.run(_echo_server(echo_server))
        return
    scratch = Path(tempfile.mkdtemp(prefix="qb"))
    echo_socket, qrmid_socket = scratch / "echo.sock", scratch / "qrmid.sock"
    config = scratch / "qrmid.toml"
    config.write_text(f'[daemon]\nsocket = "{qrmid_socket}"\nlog_level = "warning"\n[tasks]\nretain = 1000000\n'
                      '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 64\nqueue_limit = 100000\n')
    echo = _spawn_echo(echo_socket)
    qrmid = start_qrmid(config, qrmid_socket)
    try:
        r = asyncio.run(_measure(echo_socket, qrmid_socket, count, seconds, clients))
    finally:
        qrmid.stop()
        echo.terminate()
        echo.wait()
    table = Table("measure", "value", "baseline (bare gRPC echo)", "ratio", title="qrmid benchmark")
    ms = 1e3
    table.add_row("GetTask latency p50", f"{r['get_p50'] * ms:.3f} ms", f"{r['base_p50'] * ms:.3f} ms",
                  f"{r['get_p50'] / r['base_p50']:.2f}x")
    table.add_row("GetTask latency p99", f"{r['get_p99'] * ms:.3f} ms", f"{r['base_p99'] * ms:.3f} ms",
                  f"{r['get_p99'] / r['base_p99']:.2f}x")
    table.add_row(f"GetTask throughput, {clients} clients", f"{r['get_rps']:.0f} calls/s",
                  f"{r['base_rps']:.0f} calls/s", f"{r['get_rps'] / r['base_rps']:.2f}x")
    table.add_row(f"tasks end to end (noop), {clients} clients", f"{r['tasks_ps']:.0f} tasks/s",
                  f"{r['base_rps']:.0f} calls/s", f"{r['tasks_ps'] / r['base_rps']:.3f}x")
    Console().print(table)


