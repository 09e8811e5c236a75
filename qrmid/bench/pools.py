"""Benchmark of pools, run by hand: ``python -m qrmid.bench.pools``.

One qrmid process (journal on) serves two ``noop`` members of 4 slots each, a pool over them, and, as the baseline, a
``noop`` resource of 8 slots: the same slots behind one queue, without the pool's binding and hand-over. Each round
runs ``--tasks`` tasks on the pool and on the baseline from 16 concurrent callers (``AsyncClient.run``: start, wait for
the end, fetch the result), the sides alternating, each round in the other order; every task runs ``--delay``
seconds. Printed: tasks per second of each side (min–median–max of the rounds) and the ratio of the medians, and the
share of the pool's tasks each member ran.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from qrmid.bench.process import QrmidProcess
from qrmid.bench.timing import spread
from qrmid.client import AsyncClient, pulser_payload

PAYLOAD = pulser_payload({}, 1)
CALLERS = 16
SIDES = {"pool": "pool of 2 × 4 slots", "single": "one resource of 8 slots"}


def qrmid_process(scratch: Path, delay: float) -> QrmidProcess:
    """A qrmid process on its own socket and journal serving the pool, its members and the baseline."""
    socket, config = scratch / "qrmid.sock", scratch / "qrmid.toml"
    config.touch(mode=0o600)
    noop = '[[resources]]\ntype = "noop"\nname = "{name}"\nslots = {slots}\ndelay_seconds = {delay}\n'
    config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[journal]\n'
                      f'path = "{scratch / "journal.db"}"\n[limits]\ncalls_per_second = 0\nstreams_per_client = 0\n'
                      + noop.format(name="a", slots=4, delay=delay) + noop.format(name="b", slots=4, delay=delay)
                      + noop.format(name="single", slots=8, delay=delay)
                      + '[[resources]]\ntype = "pool"\nname = "pool"\nmembers = ["a", "b"]\n')
    return QrmidProcess(config, socket, output=scratch / "qrmid.log")


async def _round(client: AsyncClient, resource: str, tasks: int) -> tuple[float, list[str]]:
    """Tasks per second of ``tasks`` tasks run on ``resource`` by CALLERS concurrent callers, with the ids run."""
    ids: list[str] = []

    async def caller(share: int) -> None:
        for _ in range(share):
            task, _ = await client.run(resource, PAYLOAD)
            ids.append(task.id)

    start = time.perf_counter()
    await asyncio.gather(*(caller(tasks // CALLERS + (index < tasks % CALLERS)) for index in range(CALLERS)))
    return tasks / (time.perf_counter() - start), ids


async def measure(address: str, rounds: int, tasks: int) -> tuple[dict[str, list[float]], Counter[str]]:
    async with AsyncClient(address) as client:
        for name in SIDES:  # warm-up, untimed
            await _round(client, name, CALLERS)
        rates: dict[str, list[float]] = {name: [] for name in SIDES}
        members: Counter[str] = Counter()
        for turn in range(rounds):
            for name in list(SIDES)[::1 if turn % 2 else -1]:
                rate, ids = await _round(client, name, tasks)
                rates[name].append(rate)
                if name == "pool":
                    members.update([(await client.task(task_id)).member for task_id in ids])
    return rates, members


@click.command()
@click.option("--rounds", default=5, help="rounds of each side, alternating")
@click.option("--tasks", default=400, help="tasks per round and side")
@click.option("--delay", default=0.02, help="seconds each noop task runs")
def main(rounds: int, tasks: int, delay: float) -> None:
    """Tasks per second through a pool of two members against one resource with their slots, in one run."""
    scratch = Path(tempfile.mkdtemp(prefix="qp"))
    daemon = qrmid_process(scratch, delay)
    daemon.start()
    try:
        rates, members = asyncio.run(measure(daemon.address, rounds, tasks))
    finally:
        daemon.stop()
    table = Table("side", "tasks/s", "median vs one resource",
                  title=f"{tasks} tasks of {delay:g} s per round from {CALLERS} callers, journal on "
                        f"(min–median–max of {rounds} rounds)", width=150)
    base = statistics.median(rates["single"])
    for name, label in SIDES.items():
        table.add_row(label, spread(rates[name], "tasks/s"), f"{statistics.median(rates[name]) / base:.2f}x")
    console = Console(width=150)  # never cut a figure, in a terminal or a pipe
    console.print(table)
    total = sum(members.values())
    console.print("pool tasks per member: " + ", ".join(f"{member} {count / total:.0%}"
                                                      for member, count in sorted(members.items())))


if __name__ == "__main__":
    main()
