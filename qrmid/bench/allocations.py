"""Benchmark of the allocation check on StartTask, run by hand: ``python -m qrmid.bench.allocations``.

In memory: ``Allocations.admit`` for an account with no allocation (the baseline: one dictionary lookup), with one,
and with ten (each on the task's resource and a different group of others, over usage of ten resources).

Then end to end, against one qrmid process (journal on) on its own Unix socket: the latency of StartTask by a caller
whose account has no allocation, and by the same caller once ten hard allocations charge it, alternating round by
round (the allocations are set before and deleted after each round with them, untimed). Every task waits behind a
day-long task on a one-slot ``noop`` resource and is stopped once its StartTask returns (untimed).
"""

from __future__ import annotations

import asyncio
import getpass
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import grpc
from rich.console import Console
from rich.table import Table

from qrmid.backends.payloads import PulserSequence
from qrmid.bench.process import QrmidProcess
from qrmid.bench.timing import spread, timed
from qrmid.client import AsyncClient, pulser_payload
from qrmid.core.allocations import PERIODS, Allocations, allocation
from qrmid.core.events import Events
from qrmid.core.tasks import Task, TaskState
from qrmid.v1 import admin_pb2, admin_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

RESOURCES = [f"r{index}" for index in range(10)]
PAYLOAD_PB = pulser_payload({}, 100)
ALLOCATIONS = 10


def book(count: int) -> Allocations:
    """Allocations of account ``alice``: ``count`` of them, each on r0 and a different group of others; and a
    finished task of hers on every resource."""
    allocations = Allocations(Events())
    for index in range(count):
        allocations.take(allocation("alice", RESOURCES[:index + 1], "hard", 1e9, 10**12, PERIODS[index % 5],
                                    RESOURCES))
    for name in RESOURCES:
        task = Task(resource=name, owner="alice", payload=PulserSequence("{}", 100), shots=100)
        task.transition(TaskState.RUNNING)
        task.transition(TaskState.COMPLETED)
        allocations.task_changed(task)
    return allocations


def in_memory() -> Table:
    table = Table("allocations of the account", "admit", "ratio", title="Allocations.admit (best of 3 × 10,000)")
    took = {count: timed(_admit(book(count)), 10_000) for count in (0, 1, ALLOCATIONS)}
    for count, seconds in took.items():
        table.add_row(str(count), f"{seconds * 1e6:.2f} µs", f"{seconds / took[0]:.1f}×")
    return table


def _admit(allocations: Allocations) -> Callable[[], object]:
    return lambda: allocations.admit("alice", "r0", 100)


def qrmid_process(scratch: Path) -> QrmidProcess:
    """A qrmid process on its own socket and journal, with one one-slot resource."""
    socket, config = scratch / "qrmid.sock", scratch / "qrmid.toml"
    config.touch(mode=0o600)
    config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[journal]\nenabled = true\n'
                      f'path = "{scratch / "journal.db"}"\n[limits]\ncalls_per_second = 0\n'
                      + "".join(f'[[resources]]\ntype = "noop"\nname = "{name}"\nslots = 1\n'
                                'delay_seconds = 86400\n' for name in RESOURCES))
    return QrmidProcess(config, socket, output=scratch / "qrmid.log")


async def _round(client: AsyncClient, calls: int) -> list[float]:
    """Seconds of each of ``calls`` sequential StartTasks onto r0, each task stopped once answered."""
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        task = await client.start_task("r0", PAYLOAD_PB)
        latencies.append(time.perf_counter() - start)
        await client.stop_task(task.id)
    return latencies


async def start_latencies(address: str, rounds: int, calls: int) -> dict[str, list[float]]:
    """StartTask p50 per round, without and with allocations; the sides alternate, each round in the other order."""
    account = getpass.getuser()  # the caller, on a socket without authentication
    groups = [RESOURCES[:index + 1] for index in range(ALLOCATIONS)]
    async with AsyncClient(address) as client, grpc.aio.insecure_channel(address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)

        async def budgets(on: bool) -> None:
            for group in groups:
                if on:
                    await admin.SetAllocation(admin_pb2.SetAllocationRequest(allocation=pb.Allocation(
                        account=account, resources=group, shots=10**15, period="month")))
                else:
                    await admin.DeleteAllocation(admin_pb2.DeleteAllocationRequest(account=account, resources=group))

        await client.start_task("r0", PAYLOAD_PB)  # the day-long task that holds the slot
        await _round(client, 20)  # warm-up, untimed
        figures: dict[str, list[float]] = {"none": [], "ten": []}
        for turn in range(rounds):
            for side in ("none", "ten")[::1 if turn % 2 else -1]:
                if side == "ten":
                    await budgets(True)
                figures[side].append(statistics.median(await _round(client, calls)))
                if side == "ten":
                    await budgets(False)
    return figures


def end_to_end(rounds: int, calls: int) -> Table:
    scratch = Path(tempfile.mkdtemp(prefix="qa"))
    daemon = qrmid_process(scratch)
    daemon.start()
    try:
        figures = asyncio.run(start_latencies(daemon.address, rounds, calls))
    finally:
        daemon.kill()  # the day-long task is not waited for
    table = Table("StartTask p50", "no allocation", f"{ALLOCATIONS} hard allocations", "ratio",
                  title=f"StartTask with and without allocations charging the caller, journal on "
                        f"(min–median–max of {rounds} rounds of {calls} sequential calls)")
    table.add_row("", spread(figures["none"], "ms", 1e3, 2), spread(figures["ten"], "ms", 1e3, 2),
                  f"{statistics.median(figures['ten']) / statistics.median(figures['none']):.2f}x")
    return table


@click.command()
@click.option("--rounds", default=6, help="rounds of each side, alternating")
@click.option("--calls", default=200, help="sequential StartTasks per round")
def main(rounds: int, calls: int) -> None:
    """Time the allocation check in memory, then StartTask without and with allocations, in one run."""
    console = Console(width=150)  # never cut a figure, in a terminal or a pipe
    console.print(in_memory())
    console.print(end_to_end(rounds, calls))


if __name__ == "__main__":
    main()
