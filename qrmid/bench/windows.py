"""Benchmark of the window gate, run by hand: ``python -m qrmid.bench.windows``.

In memory: a resource's scheduler with 10,000 queued tasks of one account while a reservation for another account
is in force, so that each dispatch attempt looks through the whole queue and finds nothing to take. The time of one
such look (``Scheduler._take`` with the window gate) is measured against the same queue with no window gate at all,
which takes the first task at once, and against the same queue with the gate but no window (every task admitted,
the first taken), rounds alternating. Also the gate's verdict on one more task of a dispatch (its rules are made once
per dispatch), with 0, 1, 10 and 100 windows ahead.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time

import click
from rich.console import Console
from rich.table import Table

from qrmid.backends.noop import Noop, Settings
from qrmid.backends.payloads import PulserSequence
from qrmid.bench.timing import spread, timed
from qrmid.core.events import Events
from qrmid.core.resource import Resource
from qrmid.core.scheduler import Scheduler
from qrmid.core.tasks import Task
from qrmid.core.windows import RESERVATION, Window, Windows

QUEUED = 10_000
ROUNDS = 7
PAYLOAD = PulserSequence(sequence="{}", job_runs=1)


def served(queued: int) -> tuple[Resource, Windows]:
    """A one-slot noop resource with its window table and ``queued`` tasks of account "chemistry"."""
    adapter = Noop(Settings(type="noop", name="r"))
    scheduler = Scheduler("r", adapter, queue_limit=queued + 1, poll_interval=1.0)
    resource = Resource("r", "noop", adapter, scheduler, status_interval=10.0)
    for index in range(queued):
        scheduler.enqueue(Task(resource="r", owner=f"user{index % 10}", account="chemistry", payload=PAYLOAD))
    return resource, Windows(lambda: {"r": resource}, Events())


def reserve(windows: Windows, start: float, end: float, count: int = 1) -> None:
    """``count`` reservations of resource r for account physics, the first from ``start`` to ``end``, the others a day
    apart after it (admins' windows, as restored from a journal)."""
    windows.restore(Window(f"w{index}", "r", RESERVATION, start + index * 86_400, end + index * 86_400,
                           accounts=("physics",)) for index in range(count))


def look(scheduler: Scheduler) -> float:
    """Seconds of one look through the queue for a task to take (the task taken, if any, goes back first)."""
    start = time.perf_counter()
    taken = scheduler._take()
    seconds = time.perf_counter() - start
    if taken is not None:
        scheduler._queue.push_front(taken)
    return seconds


async def run() -> None:
    now = time.time()
    held, held_windows = served(QUEUED)
    held_windows.attach(held)
    reserve(held_windows, now - 60, now + 86_400)
    bare, _ = served(QUEUED)
    open_, open_windows = served(QUEUED)
    open_windows.attach(open_)
    rounds: dict[str, list[float]] = {"no gate": [], "gate, no window": [], "gate, reservation in force": []}
    for _ in range(ROUNDS):
        rounds["no gate"].append(look(bare.scheduler))
        rounds["gate, no window"].append(look(open_.scheduler))
        rounds["gate, reservation in force"].append(look(held.scheduler))
    assert held.scheduler._take() is None, "the reservation admits no queued task"
    base = statistics.median(rounds["no gate"])
    table = Table(title=f"one look through {QUEUED:,} queued tasks for one to take (min–median–max of {ROUNDS})",
                  width=150)
    for column in ("queue", "time", "median vs no gate"):
        table.add_column(column)
    for label, values in rounds.items():
        table.add_row(label, spread(values, "ms", 1e3, 3), f"{statistics.median(values) / base:.1f}x")
    console = Console(width=150)
    console.print(table)
    verdicts = Table(title="the gate's verdict on one more task at a dispatch (best of 3 rounds of 20,000)", width=150)
    for column in ("windows ahead", "per task"):
        verdicts.add_column(column)
    task = Task(resource="r", owner="bob", payload=PAYLOAD)
    for count in (0, 1, 10, 100):
        resource, windows = served(0)
        windows.attach(resource)
        reserve(windows, now + 3600, now + 7200, count)
        gate = resource.scheduler.gates[0]
        verdicts.add_row(str(count), f"{timed(functools.partial(gate.hold, task, now), 20_000) * 1e6:.2f} µs")
    console.print(verdicts)


@click.command()
def main() -> None:
    """The window gate's cost at dispatch, against a queue without it."""
    asyncio.run(run())


if __name__ == "__main__":
    main()
