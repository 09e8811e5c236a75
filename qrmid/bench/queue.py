"""Benchmark of the fair-share queue, run by hand: ``python -m qrmid.bench.queue``.

For 10,000 queued tasks spread over 1, 10 and 100 accounts it times pushing them all, taking one, computing the
whole taking order after a change, and ``position`` (cached, or at most 0.5 s stale in a queue this long). Each
is printed with its ratio to a plain FIFO (a deque, and ``list.index`` for a place) measured in the same run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from qrmid.backends.payloads import PulserSequence
from qrmid.bench.timing import timed
from qrmid.core.queue import FairQueue
from qrmid.core.tasks import Task

QUEUED = 10_000
PAYLOAD = PulserSequence(sequence="{}", job_runs=1)


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
    rows.append(("position", timed(lambda: fair.position(last), 1000), timed(lambda: listed.index(last), 5)))
    return rows


def main() -> None:
    table = Table(title=f"fair-share queue vs FIFO, {QUEUED:,} queued tasks")
    for column in ("accounts", "operation", "fair queue", "FIFO", "ratio"):
        table.add_column(column)
    for accounts in (1, 10, 100):
        for what, fair, fifo in measure(accounts):
            table.add_row(str(accounts), what, f"{fair * 1e6:,.1f} µs", f"{fifo * 1e6:,.1f} µs", f"{fair / fifo:,.1f}×")
    Console().print(table)


if __name__ == "__main__":
    main()
