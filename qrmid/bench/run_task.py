"""Benchmark of one call per task, run by hand: ``python -m qrmid.bench.run_task [--calls N] [--rounds R]``.

A no-op task run to its end by one client, one task after the other, two ways, alternating round by round in one
run against one ``qrmid serve`` process (journal on):

- three calls: StartTask, then WatchTask to its end, then GetTaskResult (the baseline, what ``Client.run`` made
  before RunTask);
- one call: RunTask (``Client.run``).

For each, min–median–max over the rounds of that round's median and p99 time per task, and the daemon's CPU time per
task (user and system time of its process and those it started, from /proc, over the round), with the ratio of the medians. The no-op resource completes
each task at once, so the figures are qrmid's own cost per task: calls, journal commits, dispatch.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from qrmid.bench.process import QrmidProcess
from qrmid.bench.timing import cpu_seconds, spread
from qrmid.client import Client, pulser_payload
from qrmid.v1 import quantum_resources_pb2 as pb

RESOURCES = '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 2\n'
PAYLOAD = pulser_payload({"version": "1"}, 1)


def three_calls(client: Client) -> None:
    task = client.start_task("noop", PAYLOAD)
    if client.wait(task.id).state != pb.TASK_STATE_COMPLETED:
        raise RuntimeError(f"task {task.id} did not complete")
    client.result(task.id)


def one_call(client: Client) -> None:
    client.run("noop", PAYLOAD)


def timed(run: Callable[[], None], calls: int, pid: int) -> tuple[list[float], float]:
    """Seconds of each of ``calls`` sequential tasks (after five to warm up), and the daemon's CPU seconds per task."""
    for _ in range(5):
        run()
    cpu = cpu_seconds(pid)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times, (cpu_seconds(pid) - cpu) / calls


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


@click.command()
@click.option("--calls", default=300, show_default=True, help="sequential tasks per variant and round")
@click.option("--rounds", default=5, show_default=True, help="alternations of the two variants")
def main(calls: int, rounds: int) -> None:
    """Time per no-op task through Client.run: StartTask + WatchTask + GetTaskResult against one RunTask call."""
    variants = {"StartTask + WatchTask + GetTaskResult (baseline)": three_calls, "RunTask": one_call}
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="qr") as scratch:
        socket, config = Path(scratch) / "qrmid.sock", Path(scratch) / "qrmid.toml"
        config.touch(mode=0o600)
        config.write_text(f'[daemon]\nsocket = "{socket}"\n[journal]\npath = "{Path(scratch) / "journal.db"}"\n'
                          f'{RESOURCES}')
        daemon = QrmidProcess(config, socket, output=Path(scratch) / "qrmid.log")
        daemon.start()
        assert daemon.process is not None
        try:
            with Client(daemon.address) as client:
                for _ in range(rounds):
                    for name, variant in variants.items():
                        times, cpu = timed(partial(variant, client), calls, daemon.process.pid)
                        figures.setdefault((name, "median per task"), []).append(statistics.median(times))
                        figures.setdefault((name, "p99 per task"), []).append(p99(times))
                        figures.setdefault((name, "daemon CPU per task"), []).append(cpu)
        finally:
            daemon.stop()
    table = Table(title=f"a no-op task to its end, one client: {calls} sequential tasks, {rounds} rounds "
                        "(min–median–max of each round's figure)")
    for column in ("figure", *variants, "ratio of medians"):
        table.add_column(column)
    base, mine = variants
    for figure in ("median per task", "p99 per task", "daemon CPU per task"):
        table.add_row(figure, spread(figures[(base, figure)], "ms", 1e3, 2), spread(figures[(mine, figure)], "ms", 1e3, 2),
                      f"{statistics.median(figures[(mine, figure)]) / statistics.median(figures[(base, figure)]):.2f}x")
    Console(width=150).print(table)  # never cut a figure, in a terminal or a pipe


if __name__ == "__main__":
    main()
