"""How often the Pasqal packer looks at a batch: its poll interval, or sooner when the batch's jobs are expected to
end sooner (from the run times the service reports); and the Pasqal benchmark as shipped, under the usual umask."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from emulators.pasqal_fixtures import running_emulator

from qrmid.backends.pasqal_cloud.api import PasqalApi
from qrmid.backends.pasqal_cloud.packer import MAX_BACKOFF, Batch, Limits, Packer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def packer() -> AsyncIterator[Packer]:
    """A packer with a 1 s poll interval and a 0.05 s floor; these tests make no call to the service."""
    async with httpx.AsyncClient() as http:
        api = PasqalApi(http, "http://127.0.0.1:9", tokens=None, deadline=1.0)  # type: ignore[arg-type]
        yield Packer(api, "FRESNEL", "project", Limits(60, 100, 0, True), poll_interval=1.0, min_poll_interval=0.05)


def finished(start: str, end: str) -> dict[str, str]:
    return {"id": "j", "status": "DONE", "start_timestamp": start, "end_timestamp": end}


def counts(pending: int, running: int, done: int = 0) -> dict[str, int]:
    return {"PENDING": pending, "RUNNING": running, "DONE": done, "ERROR": 0, "CANCELED": 0}


async def test_the_run_time_is_a_moving_average_of_the_reported_run_times(packer: Packer) -> None:
    assert packer.run_time is None
    packer._learn_run_time(finished("2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.200000+00:00"))
    assert packer.run_time == pytest.approx(0.2)
    packer._learn_run_time(finished("2026-01-01T00:00:01+00:00", "2026-01-01T00:00:01.700000+00:00"))
    assert packer.run_time == pytest.approx(0.8 * 0.2 + 0.2 * 0.7)
    before = packer.run_time
    for unusable in ({"id": "j", "status": "CANCELED", "start_timestamp": None, "end_timestamp": "x"},
                     {"id": "j", "status": "DONE"},
                     finished("2026-01-01T00:00:01", "2026-01-01T00:00:02+00:00"),  # naive against aware
                     finished("2026-01-01T00:00:02+00:00", "2026-01-01T00:00:01+00:00")):  # ends before it starts
        packer._learn_run_time(unusable)
    assert packer.run_time == before


async def test_a_batch_is_polled_on_the_interval_until_its_jobs_run_and_a_run_time_is_known(packer: Packer) -> None:
    batch = Batch("b", open=True)
    assert packer._next_poll(batch, counts(5, 1)) == 1.0  # no run time known yet
    packer.run_time = 0.1
    assert packer._next_poll(batch, counts(5, 0)) == 1.0  # queued or starting: nothing runs
    assert packer._next_poll(batch, counts(0, 0, 3)) == 1.0  # open and waiting for jobs


async def test_a_batch_expected_to_end_before_the_interval_is_polled_then(packer: Packer) -> None:
    batch = Batch("b", open=True)
    packer.run_time = 0.1
    assert packer._next_poll(batch, counts(50, 1)) == 1.0  # 5.1 s of work left: the interval
    assert packer._next_poll(batch, counts(2, 1)) == pytest.approx(0.3)
    assert packer._next_poll(batch, counts(0, 1)) == pytest.approx(0.1)
    packer.run_time = 0.001
    assert packer._next_poll(batch, counts(0, 1)) == 0.05  # never more often than min_poll_interval


async def test_looks_that_find_no_job_ended_back_off_up_to_the_interval(packer: Packer) -> None:
    batch = Batch("b", open=True)
    packer.run_time = 0.01
    waits = []
    for fruitless in range(MAX_BACKOFF + 3):
        batch.fruitless = fruitless
        waits.append(packer._next_poll(batch, counts(0, 1)))
    assert waits[:5] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8])
    assert waits[5:] == [1.0] * (len(waits) - 5)


async def test_without_a_floor_the_packer_polls_on_the_interval_alone() -> None:
    async with httpx.AsyncClient() as http:
        api = PasqalApi(http, "http://127.0.0.1:9", tokens=None, deadline=1.0)  # type: ignore[arg-type]
        packer = Packer(api, "FRESNEL", "project", Limits(60, 100, 0, True), poll_interval=0.5)
    packer.run_time = 0.01
    assert packer._next_poll(Batch("b", open=True), counts(0, 1)) == 0.5


def test_the_emulator_counts_the_requests_clients_make_and_not_its_test_hooks(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emulator:
        first = emulator.record()["requests"]
        assert emulator.record()["requests"] == first  # the hooks are not counted
        for _ in range(3):
            httpx.get(f"{emulator.url}/core-fast/api/v1/devices", params={"device_type": "FRESNEL"}, timeout=10)
        httpx.get(f"{emulator.url}/core-fast/api/v1/no-such-path", timeout=10)
        assert emulator.record()["requests"] == first + 4


@pytest.mark.slow
def test_the_benchmark_runs_as_shipped_under_umask_022(tmp_path: Path) -> None:
    """Its configs hold credentials: the daemon accepts them whatever the caller's umask."""
    args = ["sh", "-c", 'umask 022 && exec "$@"', "sh", sys.executable, "-m", "qrmid.bench.pasqal", "--tasks", "6",
            "--callers", "2", "--rounds", "2", "--overhead", "0.1", "--job-seconds", "0.02", "--runs", "10"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    header = next(line for line in table.splitlines() if "qrmid" in line)
    assert [cell.strip() for cell in header.split("┃")[2:-1]] == \
        ["qrmid", "pasqal-cloud SDK", "SDK, polled every 0.25 s", "QRMI-style"], table
    batches = next(line for line in table.splitlines() if line.startswith("│ batches"))
    # packed into one; one per caller's submission (twice); one per task
    assert [cell.strip() for cell in batches.split("│")[2:-1]] == ["1–1–1", "2–2–2", "2–2–2", "6–6–6"], table
    assert "makespan / ideal" in table and "device time" in table
    requests = next(line for line in table.splitlines() if line.startswith("│ HTTP requests"))
    per_task = [float(cell.strip().split("–")[1]) for cell in requests.split("│")[2:-1]]
    assert all(value > 0 for value in per_task), table
