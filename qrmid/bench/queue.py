"""Benchmark of the fair-share queue, run by hand: ``python -m qrmid.bench.queue``.

In memory, for 10,000 queued tasks spread over 1, 10 and 100 accounts: pushing them all, taking one, computing the
whole taking order after a change, ``position`` with the queue unchanged, and a task queued, its position asked
and the task removed (a StartTask then a cancel), each against a plain FIFO (a deque, and ``list.index`` for a
place) measured in the same run.

Then end to end, against one qrmid process (journal on) on its own Unix socket: the latency of StartTask, whose
answer carries the new task's queue position, onto an empty queue and onto 10,000 queued tasks. Both queues sit
behind a day-long task on a one-slot ``noop`` resource; each measured task is stopped after its StartTask returns
(untimed), so every call finds the same queue. The two sides alternate round by round.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from qrmid.backends.payloads import PulserSequence
from qrmid.bench.process import QrmidProcess
from qrmid.bench.timing import spread, timed
from qrmid.client import AsyncClient, pulser_payload
from qrmid.core.queue import FairQueue
from qrmid.core.tasks import Task

QUEUED = 10_000
PAYLOAD = PulserSequence(sequence="{}", job_runs=1)
PAYLOAD_PB = pulser_payload({}, 1)


def measure(accounts: int) -> list[tuple[str, float, float]]:
    """(what, fair queue seconds, FIFO seconds) for ``accounts`` accounts."""
    tasks = [Task(resource="r", owner=f"user{index % accounts}", payload=PAYLOAD) for index in range(QUEUED)]
    last = tasks[-1]

    def fill_fair() -> FairQueue:
        queue = FairQueue()
        for task in tasks:
            queue.push(task)
        return queue

    def fill_fifo() -> deque[Task]:
        return deque(tasks)

    rows = [("push 10k", timed(fill_fair), timed(fill_fifo))]

    def pops(fill: Callable[[], FairQueue | deque[Task]], take: Callable[[FairQueue | deque[Task]], Task]) -> float:
        best = float("inf")
        for _ in range(3):
            queue = fill()
            start = time.perf_counter()
            for _ in range(1000):
                take(queue)
            best = min(best, (time.perf_counter() - start) / 1000)
        return best

    rows.append(("pop", pops(fill_fair, lambda queue: queue.pop()),
                 pops(fill_fifo, lambda queue: queue.popleft())))  # type: ignore[union-attr]
    fair, listed = fill_fair(), list(tasks)

    def order_after_a_change() -> list[Task]:
        fair.push_front(fair.pop())
        return list(fair)

    def fifo_order() -> list[Task]:
        return list(deque(listed))

    rows.append(("taking order after a change", timed(order_after_a_change, 5), timed(fifo_order, 5)))
    fair.position(last)
    rows.append(("position (queue unchanged)", timed(lambda: fair.position(last), 1000),
                 timed(lambda: listed.index(last), 5)))
    extra = Task(resource="r", owner=last.owner, payload=PAYLOAD)

    def position_of_a_new_task() -> int:
        fair.push(extra)
        place = fair.position(extra)
        fair.remove(extra)
        return place

    def fifo_place() -> int:
        listed.append(extra)
        place = listed.index(extra)
        listed.pop()
        return place

    rows.append(("push, position, remove", timed(position_of_a_new_task, 100), timed(fifo_place, 5)))
    return rows


def in_memory() -> Table:
    table = Table(title=f"fair-share queue vs FIFO, {QUEUED:,} queued tasks")
    for column in ("accounts", "operation", "fair queue", "FIFO", "ratio"):
        table.add_column(column)
    for accounts in (1, 10, 100):
        for what, fair, fifo in measure(accounts):
            table.add_row(str(accounts), what, f"{fair * 1e6:,.1f} µs", f"{fifo * 1e6:,.1f} µs", f"{fair / fifo:,.1f}×")
    return table


RESOURCE = ('[[resources]]\ntype = "noop"\nname = "{name}"\nslots = 1\ndelay_seconds = 86400\nqueue_limit = 20000\n'
            'max_queued_per_owner = 0\n')
SIDES = {"empty": "an empty queue", "deep": f"{QUEUED:,} queued tasks"}


def qrmid_process(scratch: Path) -> QrmidProcess:
    """A qrmid process on its own socket and journal, with a one-slot resource per side."""
    socket, config = scratch / "qrmid.sock", scratch / "qrmid.toml"
    config.touch(mode=0o600)
    config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[journal]\nenabled = true\n'
                      f'path = "{scratch / "journal.db"}"\n[limits]\ncalls_per_second = 0\n'
                      + "".join(RESOURCE.format(name=name) for name in SIDES))
    return QrmidProcess(config, socket, output=scratch / "qrmid.log")


async def _fill(client: AsyncClient, resource: str, count: int, callers: int = 16) -> None:
    """``count`` tasks queued on ``resource``, by ``callers`` concurrent callers."""
    async def caller(share: int) -> None:
        for _ in range(share):
            await client.start_task(resource, PAYLOAD_PB)

    await asyncio.gather(*(caller(count // callers + (index < count % callers)) for index in range(callers)))


async def _round(client: AsyncClient, resource: str, calls: int) -> list[float]:
    """Seconds of each of ``calls`` sequential StartTasks onto ``resource``, each task stopped once answered."""
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        task = await client.start_task(resource, PAYLOAD_PB)
        latencies.append(time.perf_counter() - start)
        if not task.queue_position:
            raise SystemExit(f"StartTask onto {resource!r} answered no queue position")
        await client.stop_task(task.id)
    return latencies


async def start_latencies(address: str, rounds: int, calls: int) -> dict[str, list[tuple[float, float]]]:
    """(p50, p99) of StartTask per round and side; the sides alternate, each round in the other order."""
    async with AsyncClient(address) as client:
        for name in SIDES:  # the day-long task that holds each resource's slot
            await client.start_task(name, PAYLOAD_PB)
        await _fill(client, "deep", QUEUED)
        await _round(client, "empty", 20)  # warm-up, untimed
        await _round(client, "deep", 20)
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in SIDES}
        for turn in range(rounds):
            for name in list(SIDES)[::1 if turn % 2 else -1]:
                cuts = statistics.quantiles(await _round(client, name, calls), n=100)
                figures[name].append((cuts[49], cuts[98]))
    return figures


def end_to_end(rounds: int, calls: int) -> Table:
    scratch = Path(tempfile.mkdtemp(prefix="qq"))
    daemon = qrmid_process(scratch)
    daemon.start()
    try:
        figures = asyncio.run(start_latencies(daemon.address, rounds, calls))
    finally:
        daemon.kill()  # the day-long tasks are not waited for
    table = Table("StartTask latency", *(f"onto {what}" for what in SIDES.values()), "ratio",
                  title=f"StartTask onto an empty queue vs onto {QUEUED:,} queued, journal on "
                        f"(min–median–max of {rounds} rounds of {calls} sequential calls)")
    for index, measure in enumerate(("p50", "p99")):
        values = {name: [figure[index] for figure in figures[name]] for name in SIDES}
        table.add_row(measure, *(spread(values[name], "ms", 1e3, 2) for name in SIDES),
                      f"{statistics.median(values['deep']) / statistics.median(values['empty']):.2f}x")
    return table


@click.command()
@click.option("--rounds", default=5, help="rounds of each side, alternating")
@click.option("--calls", default=200, help="sequential StartTasks per round")
def main(rounds: int, calls: int) -> None:
    """Time the fair-share queue in memory, then StartTask onto an empty and onto a deep queue, in one run."""
    console = Console(width=150)  # never cut a figure, in a terminal or a pipe
    console.print(in_memory())
    console.print(end_to_end(rounds, calls))


if __name__ == "__main__":
    main()
