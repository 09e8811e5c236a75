"""Benchmark of the lease gate, run by hand: ``python -m qrmid.bench.lease_gate``.

In memory: a resource's scheduler with 10,000 queued tasks of 100 users. One dispatch look (``Scheduler._take``) is
timed in three ways, rounds alternating: with no gate at all (the baseline: the first task is taken at once), with the
lease gate and no lease (every task admitted, the first taken), and while another job's exclusive lease holds the
resource, so that the look goes through the whole queue and finds nothing to take. The gate works out what holds the
tasks once per look, not once per task.
"""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.table import Table

from qrmid.backends.noop import Noop, Settings
from qrmid.backends.payloads import PulserSequence
from qrmid.bench.timing import spread, timed
from qrmid.core.exclusive import LeaseGate
from qrmid.core.leases import LeaseMode, LeaseTable
from qrmid.core.scheduler import Scheduler
from qrmid.core.tasks import Task

QUEUED = 10_000
USERS = 100
ROUNDS = 7
PAYLOAD = PulserSequence(sequence="{}", job_runs=1)


def scheduler(gated: bool, exclusive: bool) -> Scheduler:
    """A 4-slot noop resource with ``QUEUED`` tasks; with the lease gate when ``gated``, and another job's exclusive
    lease when ``exclusive``."""
    leases = LeaseTable(default_ttl=3600, max_ttl=3600)
    built = Scheduler("r", Noop(Settings(type="noop", name="r", slots=4)), queue_limit=QUEUED + 1, poll_interval=1.0)
    if gated:
        built.gates.append(LeaseGate("r", built, leases))
    if exclusive:
        leases.grant("r", "holder", slurm_job_id="1", mode=LeaseMode.EXCLUSIVE)
    for index in range(QUEUED):
        built.enqueue(Task(resource="r", owner=f"user{index % USERS}", payload=PAYLOAD))
    return built


def look(built: Scheduler) -> None:
    """One dispatch look; a task it takes goes back to the head of the queue."""
    task = built._take()  # the look the dispatch loop makes
    if task is not None:
        built._queue.push_front(task)


def main() -> None:
    ways = {"no gate (baseline)": scheduler(False, False), "lease gate, no lease": scheduler(True, False),
            "another job's exclusive lease holds every task": scheduler(True, True)}
    seconds: dict[str, list[float]] = {what: [] for what in ways}
    started = time.perf_counter()
    for _ in range(ROUNDS):  # the ways alternate, round by round
        for what, built in ways.items():
            seconds[what].append(timed(lambda built=built: look(built), 5))  # type: ignore[misc]
    baseline = statistics.median(seconds["no gate (baseline)"])
    out = Table(title=f"one dispatch look over {QUEUED:,} queued tasks of {USERS} users: min–median–max of {ROUNDS} "
                      f"rounds ({time.perf_counter() - started:.1f} s in all)")
    out.add_column("way")
    out.add_column("ms per look", justify="right")
    out.add_column("x baseline (medians)", justify="right")
    for what, values in seconds.items():
        out.add_row(what, spread(values, "", 1e3, 3).strip(), f"{statistics.median(values) / baseline:.1f}")
    Console(width=150).print(out)  # never cut a figure, in a terminal or a pipe


if __name__ == "__main__":
    main()
