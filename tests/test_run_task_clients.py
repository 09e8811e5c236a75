"""Every client that waits for results makes one call per task (RunTask), counted by the daemon's own RPC metrics:
the Qiskit primitives, the Pulser connection, the QRMI drop-in, ``qrmid run``, and Client.launch beyond the streams
it keeps open. A real daemon in-process on a real socket; the blocking clients run in threads."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemons import ROOT, config, running
from pulser import QPUBackend
from pulser.backend.remote import BatchStatus
from qiskit import QuantumCircuit
from test_pulser_connection import rabi
from test_run_task import SEQUENCE, calls

from qrmid import client as client_module
from qrmid.client import Client, pulser_payload
from qrmid.daemon import Daemon
from qrmid.integrations.pulser import QrmidConnection
from qrmid.integrations.qiskit import SamplerV2
from qrmid.qrmi import QuantumResource, ResourceType, TaskStatus
from qrmid.qrmi.models import QiskitPrimitive

RESOURCES = [{"type": "local-qiskit", "name": "local-qiskit", "slots": 1},
             {"type": "local-pulser", "name": "local-pulser", "slots": 1},
             {"type": "noop", "name": "noop", "slots": 64, "delay_seconds": 0.2},
             {"type": "noop", "name": "slow", "slots": 1, "delay_seconds": 600}]


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    async with running(config(RESOURCES, metrics={"address": "127.0.0.1:0"})) as daemon:
        yield daemon


def bell() -> QuantumCircuit:
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()
    return circuit


async def test_a_qiskit_sampler_job_is_one_call(daemon: Daemon) -> None:
    def loop() -> list[dict[str, int]]:
        sampler = SamplerV2("local-qiskit", address=f"unix:{daemon.socket}")
        counts = []
        for _ in range(3):
            job = sampler.run([bell()], shots=200)
            result = job.result()
            assert job.status().name == "DONE" and job.done()
            counts.append(result[0].data.meas.get_counts())
        sampler._runner.connection.close()
        return counts

    counts = await asyncio.to_thread(loop)
    assert all(set(c) <= {"00", "11"} and sum(c.values()) == 200 for c in counts)
    assert await calls(daemon) == {"RunTask": 3}


async def test_a_pulser_job_is_one_call(daemon: Daemon) -> None:
    def batch() -> list[int]:
        connection = QrmidConnection("local-pulser", address=f"unix:{daemon.socket}")
        results = QPUBackend(rabi(connection.fetch_available_devices()["AnalogDevice"]), connection).run(
            [{"runs": 50}, {"runs": 30}], wait=True)
        assert results.get_batch_status() == BatchStatus.DONE
        return [sum(result.final_bitstrings.values()) for result in results.results]

    assert await asyncio.to_thread(batch) == [50, 30]
    counted = await calls(daemon)
    assert counted.pop("GetTarget") >= 1, "the devices, read from the resource's target"
    assert counted == {"RunTask": 2}, "one call per job: no GetTask, WatchTask or GetTaskResult"


async def test_a_qrmi_task_is_one_call(daemon: Daemon) -> None:
    def program() -> tuple[TaskStatus, str]:
        resource = QuantumResource("noop", ResourceType.LocalQiskit, address=f"unix:{daemon.socket}")
        task_id = resource.task_start(QiskitPrimitive(input=json.dumps({"pubs": [], "version": 2}),
                                                      program_id="sampler"))
        while (status := resource.task_status(task_id)) in (TaskStatus.Queued, TaskStatus.Running):
            pass
        return status, resource.task_result(task_id).value

    status, value = await asyncio.to_thread(program)
    assert status == TaskStatus.Completed and json.loads(value)["task"]
    assert await calls(daemon) == {"RunTask": 1}, "no GetTask per poll, no GetTaskResult"


async def test_qrmid_run_is_one_call(daemon: Daemon, tmp_path: Path) -> None:
    task_input = tmp_path / "task.json"
    task_input.write_text(json.dumps({"sequence": SEQUENCE, "job_runs": 3}))
    run = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "qrmid", "run", "noop", str(task_input),
                                                   "--raw"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "QRMID_ADDRESS": f"unix:{daemon.socket}"})
    assert run.returncode == 0, run.stderr
    task_id = run.stderr.splitlines()[0].removeprefix("task ").split(":")[0]
    assert json.loads(run.stdout) == {"task": task_id}
    assert await calls(daemon) == {"RunTask": 1}


def task_runner(daemon: Daemon, resource: str, task_input: Path) -> subprocess.Popen[str]:
    """``qrmid-task-runner RESOURCE INPUT`` in a job that was given ``resource``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("QRMI_")}
    return subprocess.Popen([sys.executable, "-m", "qrmid.task_runner", resource, str(task_input)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "QRMID_ADDRESS": f"unix:{daemon.socket}", "QRMI_JOB_QPU_RESOURCES": resource,
                                 "QRMI_JOB_QPU_TYPES": "pasqal-local"})


async def test_the_task_runner_is_one_call_and_scancel_cancels_its_task(daemon: Daemon, tmp_path: Path) -> None:
    task_input = tmp_path / "task.json"
    task_input.write_text(json.dumps({"sequence": SEQUENCE, "job_runs": 3}))
    runner = task_runner(daemon, "noop", task_input)
    printed, _ = await asyncio.to_thread(runner.communicate, timeout=120)
    assert runner.returncode == 0, printed
    task_id = printed.split("Task ID: ")[1].split()[0]
    assert json.loads(printed.splitlines()[-1]) == {"task": task_id}
    assert await calls(daemon) == {"RunTask": 1}

    slow = task_runner(daemon, "slow", task_input)
    assert slow.stdout is not None
    first = await asyncio.to_thread(slow.stdout.readline)
    assert "Task ID: " in first, first
    slow.terminate()  # what scancel sends
    printed, _ = await asyncio.to_thread(slow.communicate, timeout=120)
    assert slow.returncode == 1 and "CANCELLED" in printed, printed
    assert (await calls(daemon)).get("StopTask") == 1


async def test_launch_beyond_its_open_calls_starts_tasks_with_start_task(daemon: Daemon,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_LAUNCHED", 2)

    def launch_four() -> list[bytes]:
        with Client(f"unix:{daemon.socket}") as client:
            runs = [client.launch("noop", pulser_payload(SEQUENCE, 1)) for _ in range(4)]
            return [run.outcome(timeout=60)[1] for run in runs]

    results = await asyncio.to_thread(launch_four)
    assert [json.loads(r)["task"] for r in results] and len(set(results)) == 4
    assert await calls(daemon) == {"RunTask": 2, "StartTask": 2, "WatchTask": 2, "GetTaskResult": 2}
