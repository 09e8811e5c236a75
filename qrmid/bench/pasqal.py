"""``python -m qrmid.bench.pasqal``: open-batch packing against one batch per task, on the Pasqal Cloud emulator.

Tasks from several callers go to a QPU device type that runs one batch at a time and pays a fixed overhead per
batch: once through a resource that packs tasks into open batches, once through a resource that gives each task
its own batch (``max_jobs_per_batch = 1``, what QRMI does), both served by one qrmid against one emulator, in the
same run. Printed: batches used, jobs per batch, makespan, and their ratios.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
from rich.console import Console
from rich.table import Table

from qrmid.client import AsyncClient, pulser_payload
from qrmid.emulators.launch import start_emulator, start_qrmid
from qrmid.v1 import quantum_resources_pb2 as pb

PROJECT = "00000000-0000-0000-0000-0000000000b1"
CLIENT_ID, CLIENT_SECRET = "qrmid-bench", "qrmid-bench-secret"


@dataclass
class Run:
    """What one resource did with the tasks."""

    makespan: float
    batches: int
    largest: int


def _sequence(url: str, device_type: str) -> str:
    """A 3-atom, one-pulse sequence on the device the emulator publishes for ``device_type``."""
    from pulser import Pulse, Register, Sequence
    from pulser.abstract_repr import deserialize_device

    listing = httpx.get(f"{url}/core-fast/api/v1/devices/public-specs", timeout=10).json()["data"]
    device = deserialize_device(next(entry["specs"] for entry in listing if entry["device_type"] == device_type))
    sequence = Sequence(Register.from_coordinates([(6.0 * i, 0.0) for i in range(3)], prefix="q"), device)
    sequence.declare_channel("ryd", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 2.0, 0.0, 0.0), "ryd")
    sequence.measure("ground-rydberg")
    return str(sequence.to_abstract_repr())


def _batches(url: str, device_type: str) -> dict[str, int]:
    """Job count of every batch the emulator holds on ``device_type``."""
    record = httpx.get(f"{url}/_emulator/record", timeout=30).json()
    return {b["id"]: b["job_count"] for b in record["batches"] if b["device_type"] == device_type}


async def _run(address: str, resource: str, sequence: str, tasks: int, callers: int, runs: int) -> float:
    """Makespan of ``tasks`` tasks started by ``callers`` concurrent callers, each with its own channel."""

    async def caller(share: int) -> None:
        async with AsyncClient(address) as client:
            started = [await client.start_task(resource, pulser_payload(sequence, runs)) for _ in range(share)]
            for task in started:
                finished = await client.wait(task.id)
                if finished.state != pb.TASK_STATE_COMPLETED:
                    raise SystemExit(f"task {task.id} on {resource} did not complete: {finished.reason}")
                counts = json.loads(await client.result(task.id))["counter"]
                assert sum(counts.values()) == runs

    began = time.perf_counter()
    await asyncio.gather(*(caller(tasks // callers + (i < tasks % callers)) for i in range(callers)))
    return time.perf_counter() - began


def _measure(url: str, address: str, device_type: str, resource: str, tasks: int, callers: int, runs: int) -> Run:
    before = _batches(url, device_type)
    makespan = asyncio.run(_run(address, resource, _sequence(url, device_type), tasks, callers, runs))
    used = {b: count for b, count in _batches(url, device_type).items() if b not in before}
    return Run(makespan, len(used), max(used.values()))


def _resource(name: str, url: str, device_type: str, max_jobs: int) -> str:
    return (f'[[resources]]\ntype = "pasqal-cloud"\nname = "{name}"\ndevice_type = "{device_type}"\n'
            f'poll_interval = 0.2\nmax_jobs_per_batch = {max_jobs}\nQRMI_PASQAL_CLOUD_PROJECT_ID = "{PROJECT}"\n'
            f'QRMI_PASQAL_CLOUD_BASE_URL = "{url}"\nQRMI_PASQAL_CLOUD_AUTH_ENDPOINT = "{url}/oauth/token"\n'
            f'QRMI_PASQAL_CLOUD_CLIENT_ID = "{CLIENT_ID}"\nQRMI_PASQAL_CLOUD_CLIENT_SECRET = "{CLIENT_SECRET}"\n')


@click.command()
@click.option("--tasks", default=100, help="tasks in each run")
@click.option("--callers", default=10, help="concurrent callers sharing the tasks")
@click.option("--overhead", default=1.0, help="seconds the device spends opening each batch")
@click.option("--job-seconds", default=0.05, help="seconds the device spends on each job")
@click.option("--runs", default=100, help="runs (shots) of each task")
@click.option("--device-type", default="FRESNEL", help="a QPU device type: one batch at a time")
def main(tasks: int, callers: int, overhead: float, job_seconds: float, runs: int, device_type: str) -> None:
    """Measure packing against one batch per task in the same run."""
    scratch = Path(tempfile.mkdtemp(prefix="qp"))
    emulator_config = scratch / "emulator.json"
    emulator_config.write_text(json.dumps({
        "service_accounts": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "user_id": "bench",
                              "projects": [PROJECT]}],
        "batch_overhead_s": overhead, "job_duration_s": job_seconds, "open_batch_timeout_s": 600,
        "max_exact_atoms": 0, "token_lifetime_s": 86400}))
    emulator = start_emulator(emulator_config, module="qrmid.emulators.pasqal_cloud")
    url = emulator.url
    socket = scratch / "qrmid.sock"
    qrmid_config = scratch / "qrmid.toml"
    qrmid_config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n'
                            + _resource("packed", url, device_type, 100) + _resource("single", url, device_type, 1))
    try:
        qrmid = start_qrmid(qrmid_config, socket)
        try:
            packed = _measure(url, qrmid.url, device_type, "packed", tasks, callers, runs)
            single = _measure(url, qrmid.url, device_type, "single", tasks, callers, runs)
        finally:
            qrmid.stop()
    finally:
        emulator.stop()
    title = (f"{tasks} tasks from {callers} callers on {device_type} (one batch at a time, {overhead:g} s per batch, "
             f"{job_seconds:g} s per job)")
    table = Table("measure", "qrmid, packed", "baseline: one batch per task", "ratio", title=title)
    table.add_row("batches used", str(packed.batches), str(single.batches),
                  f"{single.batches / packed.batches:.1f}x fewer")
    table.add_row("largest batch", f"{packed.largest} jobs", f"{single.largest} job", "")
    table.add_row("makespan", f"{packed.makespan:.1f} s", f"{single.makespan:.1f} s",
                  f"{single.makespan / packed.makespan:.1f}x faster")
    Console().print(table)


if __name__ == "__main__":
    main()
