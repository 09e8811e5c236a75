"""What a finished task is charged, in the accounting records, the metrics and fair share: the time it held a
slot, and its shots only if it completed (a task cancelled while queued used nothing)."""

from __future__ import annotations

import asyncio
import getpass

import grpc
import httpx
import pytest
from daemons import config, running
from prometheus_client.parser import text_string_to_metric_families

from qrmid.backends.payloads import PulserSequence
from qrmid.client import AsyncClient, pulser_payload
from qrmid.core.queue import FairQueue, SchedulingPolicy
from qrmid.core.tasks import Task, TaskState
from qrmid.core.usage import UsageLedger, UsageWeights
from qrmid.daemon import Daemon
from qrmid.v1 import metrics_pb2 as mpb
from qrmid.v1 import metrics_pb2_grpc as mpb_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

NOOP = [{"type": "noop", "name": "fast", "slots": 1, "delay_seconds": 0.05},
        {"type": "noop", "name": "slow", "slots": 1, "delay_seconds": 60}]
ME = getpass.getuser()
SHOTS_ONLY = UsageWeights(qpu_second=0.0, shot=1.0)  # fair-share usage counts shots alone


def dispatched(queue: FairQueue, shots: int) -> Task:
    task = Task(resource="r", owner="ann", payload=PulserSequence("{}", shots), shots=shots)
    queue.push(task)
    assert queue.pop() is task
    return task


def test_fair_share_charges_the_shots_of_completed_tasks_only() -> None:
    queue = FairQueue(SchedulingPolicy(), UsageLedger(SHOTS_ONLY, clock=lambda: 0.0))
    completed, cancelled, failed = (dispatched(queue, shots) for shots in (100, 1000, 10_000))
    for task, end in ((completed, TaskState.COMPLETED), (cancelled, TaskState.CANCELLED),
                      (failed, TaskState.FAILED)):
        task.transition(TaskState.RUNNING)
        task.transition(end)
        queue.finished(task)
    assert queue.ledger.usage("ann") == 100


def test_tasks_that_never_ran_are_not_charged_again_after_a_restart() -> None:
    queue = FairQueue(SchedulingPolicy(), UsageLedger(SHOTS_ONLY, clock=lambda: 0.0))
    never_ran = Task(resource="r", owner="ann", payload=PulserSequence("{}", 5000), shots=5000)
    never_ran.transition(TaskState.CANCELLED)
    ran = Task(resource="r", owner="ann", payload=PulserSequence("{}", 7), shots=7)
    ran.transition(TaskState.RUNNING)
    ran.transition(TaskState.COMPLETED)
    for task in (never_ran, ran):
        queue.restore_usage(task)
    assert queue.ledger.usage("ann") == pytest.approx(7)


@pytest.fixture
async def daemon() -> Daemon:
    async with running(config(NOOP, metrics={"address": "127.0.0.1:0"})) as daemon:
        yield daemon


async def test_records_and_metrics_charge_what_ran(daemon: Daemon) -> None:
    async with AsyncClient(f"unix:{daemon.socket}") as client:
        completed = await client.wait((await client.start_task("fast", pulser_payload({"version": "1"}, 5))).id)
        running_task = await client.start_task("slow", pulser_payload({"version": "1"}, 300))
        queued = await client.start_task("slow", pulser_payload({"version": "1"}, 4000))
        while (await client.task(running_task.id)).state != pb.TASK_STATE_RUNNING:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # it holds the slot for a while
        queued = await client.stop_task(queued.id)
        running_task = await client.stop_task(running_task.id)
    async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        metrics = mpb_grpc.MetricsServiceStub(channel)
        records = {r.task_id: r for r in (await metrics.ListAccounting(mpb.ListAccountingRequest())).records}
        slow = (await metrics.GetUtilization(mpb.GetUtilizationRequest(resource="slow"))).resources[0]
    host, port = daemon.metrics_address
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://{host}:{port}/metrics")).text
    samples = {(s.name, s.labels.get("resource")): s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.labels.get("owner") == ME}

    assert completed.state == pb.TASK_STATE_COMPLETED
    assert (queued.state, running_task.state) == (pb.TASK_STATE_CANCELLED, pb.TASK_STATE_CANCELLED)
    assert not queued.HasField("start_time") and running_task.HasField("start_time")
    assert records[completed.id].shots == 5
    assert (records[queued.id].shots, records[queued.id].qpu_seconds) == (0, 0), "cancelled before it started"
    held = running_task.end_time.ToNanoseconds() / 1e9 - running_task.start_time.ToNanoseconds() / 1e9
    assert held >= 0.2
    assert records[running_task.id].shots == 0, "cancelled while running: no result, no shots"
    assert records[running_task.id].qpu_seconds == pytest.approx(held, abs=1e-3), "but the slot time it held"
    assert (slow.tasks_cancelled, slow.shots) == (2, 0)
    assert samples[("qrmid_usage_shots_total", "fast")] == 5
    assert samples[("qrmid_usage_shots_total", "slow")] == 0
    assert samples[("qrmid_usage_tasks_total", "slow")] == 2
    assert samples[("qrmid_usage_qpu_seconds_total", "slow")] == pytest.approx(held, abs=1e-3)
