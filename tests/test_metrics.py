"""The Prometheus endpoint scraped over HTTP, and MetricsService over gRPC, after running real tasks."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

import grpc
import httpx
import pytest
from daemons import config, running, short_dir
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from qrmid.backends import retry
from qrmid.client import AsyncClient, pulser_payload
from qrmid.daemon import Daemon, StartupError
from qrmid.v1 import metrics_pb2 as mpb
from qrmid.v1 import metrics_pb2_grpc as mpb_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

NOOP = [{"type": "noop", "name": "fast", "slots": 2, "delay_seconds": 0.05},
        {"type": "noop", "name": "slow", "slots": 1, "delay_seconds": 60}]
SEQUENCE = {"version": "1"}
ME = getpass.getuser()


def seconds(stamp: Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


async def scrape(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the daemon's endpoint, keyed by (name, sorted labels)."""
    assert daemon.metrics_address is not None
    host, port = daemon.metrics_address
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{host}:{port}/metrics")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


@pytest.fixture
async def daemon() -> Daemon:
    async with running(config(NOOP, metrics={"address": "127.0.0.1:0"})) as daemon:
        yield daemon


async def test_the_endpoint_reports_what_ran(daemon: Daemon) -> None:
    async with AsyncClient(f"unix:{daemon.socket}") as client:
        runs = [5, 7, 11]
        started = [await client.start_task("fast", pulser_payload(SEQUENCE, n)) for n in runs]
        done = [await client.wait(task.id) for task in started]
        held = await client.start_task("slow", pulser_payload(SEQUENCE, 3))
        waiting = await client.start_task("slow", pulser_payload(SEQUENCE, 3))
        while (await client.task(held.id)).state != pb.TASK_STATE_RUNNING:
            await asyncio.sleep(0.05)
        await client.stop_task(waiting.id)
        with pytest.raises(grpc.aio.AioRpcError):
            await client.task("no-such-task")
        lease = await client.acquire("fast")
        samples = await scrape(daemon)

    assert all(task.state == pb.TASK_STATE_COMPLETED for task in done)
    usage = (("account", ME), ("owner", ME), ("resource", "fast"))
    assert samples[("qrmid_tasks_queued_total", (("resource", "fast"),))] == 3
    assert samples[("qrmid_tasks_finished_total", (("resource", "fast"), ("state", "completed")))] == 3
    assert samples[("qrmid_tasks_finished_total", (("resource", "slow"), ("state", "cancelled")))] == 1
    assert samples[("qrmid_usage_tasks_total", usage)] == 3
    assert samples[("qrmid_usage_shots_total", usage)] == sum(runs)
    run_seconds = sum(seconds(t.end_time) - seconds(t.start_time) for t in done)
    assert samples[("qrmid_usage_qpu_seconds_total", usage)] == pytest.approx(run_seconds, abs=1e-3)
    assert samples[("qrmid_task_run_seconds_count", (("resource", "fast"),))] == 3
    assert samples[("qrmid_task_run_seconds_sum", (("resource", "fast"),))] == pytest.approx(run_seconds, abs=1e-3)
    wait_seconds = sum(seconds(t.start_time) - seconds(t.create_time) for t in done)
    assert samples[("qrmid_task_queue_wait_seconds_sum", (("resource", "fast"),))] == pytest.approx(wait_seconds,
                                                                                                    abs=1e-3)
    # live figures, read at scrape time: one task holds the slow resource's only slot, none waits
    assert samples[("qrmid_slots_busy", (("resource", "slow"),))] == 1
    assert samples[("qrmid_slots_total", (("resource", "slow"),))] == 1
    assert samples[("qrmid_slots_busy", (("resource", "fast"),))] == 0
    assert samples[("qrmid_queue_depth", (("resource", "slow"),))] == 0
    assert samples[("qrmid_leases_active", (("resource", "fast"),))] == 1
    assert samples[("qrmid_leases_granted_total", (("resource", "fast"),))] == 1
    assert samples[("qrmid_resource_status", (("resource", "fast"), ("status", "online")))] == 1
    start = (("code", "OK"), ("method", "/qrmid.v1.QuantumResources/StartTask"))
    assert samples[("qrmid_rpc_duration_seconds_count", start)] == 5
    missing = (("code", "NOT_FOUND"), ("method", "/qrmid.v1.QuantumResources/GetTask"))
    assert samples[("qrmid_rpc_duration_seconds_count", missing)] == 1
    assert lease.token not in str(samples) and held.id not in str(samples)


async def test_queue_depth_counts_waiting_tasks(daemon: Daemon) -> None:
    async with AsyncClient(f"unix:{daemon.socket}") as client:
        for _ in range(4):
            await client.start_task("slow", pulser_payload(SEQUENCE, 1))
        samples = await scrape(daemon)
    assert samples[("qrmid_queue_depth", (("resource", "slow"),))] + \
        samples[("qrmid_slots_busy", (("resource", "slow"),))] == 4
    assert samples[("qrmid_slots_busy", (("resource", "slow"),))] <= 1


async def test_backend_retries_and_give_ups_are_counted(daemon: Daemon) -> None:
    failures = 0
    async for attempt in retry.attempts("flaky call", deadline=30, max_wait=0.1):
        with attempt:
            if failures < 2:
                failures += 1
                raise retry.Transient("503 from the vendor")
    with pytest.raises(retry.GaveUp):
        async for attempt in retry.attempts("dead call", deadline=0.2, max_wait=0.05):
            with attempt:
                raise httpx.ConnectError("connection refused")
    samples = await scrape(daemon)
    assert samples[("qrmid_backend_retries_total", (("error", "Transient"),))] == 2
    assert samples[("qrmid_backend_errors_total", (("error", "ConnectError"),))] == 1


async def test_each_daemon_has_its_own_registry_and_the_endpoint_stops_with_it(daemon: Daemon) -> None:
    async with running(config(NOOP, metrics={"address": "127.0.0.1:0"})) as other:
        async with AsyncClient(f"unix:{other.socket}") as client:
            await client.wait((await client.start_task("fast", pulser_payload(SEQUENCE, 2))).id)
        assert (await scrape(other))[("qrmid_tasks_queued_total", (("resource", "fast"),))] == 1
        assert ("qrmid_tasks_queued_total", (("resource", "fast"),)) not in await scrape(daemon)
        host, port = other.metrics_address
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://{host}:{port}/metrics")


async def test_a_taken_metrics_port_is_a_clear_startup_error(daemon: Daemon) -> None:
    host, port = daemon.metrics_address
    with pytest.raises(StartupError, match=rf"cannot serve metrics on {host}:{port}: .*\[metrics\] address"):
        async with running(config(NOOP, metrics={"address": f"{host}:{port}"})):
            pass


async def test_utilization_and_accounting(daemon: Daemon) -> None:
    async with AsyncClient(f"unix:{daemon.socket}") as client:
        done = [await client.wait((await client.start_task("fast", pulser_payload(SEQUENCE, n))).id)
                for n in (2, 3, 4)]
        cancelled = await client.start_task("slow", pulser_payload(SEQUENCE, 9))
        cancelled = await client.stop_task(cancelled.id)
    async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        metrics = mpb_grpc.MetricsServiceStub(channel)
        fast, slow = (await metrics.GetUtilization(mpb.GetUtilizationRequest(window_seconds=600))).resources
        first = await metrics.ListAccounting(mpb.ListAccountingRequest(page_size=2))
        second = await metrics.ListAccounting(mpb.ListAccountingRequest(page_size=2,
                                                                        page_token=first.next_page_token))
        only_slow = await metrics.ListAccounting(mpb.ListAccountingRequest(resource="slow"))
        later = Timestamp()
        later.FromNanoseconds(done[-1].end_time.ToNanoseconds() + 1000)
        since = await metrics.ListAccounting(mpb.ListAccountingRequest(start_time=later))
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await metrics.ListAccounting(mpb.ListAccountingRequest(page_token="garbage"))
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await metrics.GetUtilization(mpb.GetUtilizationRequest(resource="nope"))

    run_seconds = sum(seconds(t.end_time) - seconds(t.start_time) for t in done)
    assert (fast.resource, fast.slots_total, fast.tasks_completed, fast.tasks_cancelled, fast.shots) == \
        ("fast", 2, 3, 0, 9)
    assert fast.qpu_seconds == pytest.approx(run_seconds, abs=1e-3)
    assert fast.busy_fraction == pytest.approx(run_seconds / (2 * 600), abs=1e-5)
    held = seconds(cancelled.end_time) - seconds(cancelled.start_time) if cancelled.HasField("start_time") else 0
    assert (slow.tasks_cancelled, slow.shots, fast.window_seconds) == (1, 0, 600), "a cancelled task: no shots"
    assert slow.qpu_seconds == pytest.approx(held, abs=1e-3)
    records = list(first.records) + list(second.records)
    assert len(first.records) == 2 and first.next_page_token and not second.next_page_token
    assert [r.task_id for r in records] == [t.id for t in done] + [cancelled.id]
    assert [(r.owner, r.account, r.shots, r.state) for r in records[:3]] == \
        [(ME, ME, n, pb.TASK_STATE_COMPLETED) for n in (2, 3, 4)]
    assert records[0].qpu_seconds == pytest.approx(seconds(done[0].end_time) - seconds(done[0].start_time),
                                                   abs=1e-3)
    assert [r.task_id for r in only_slow.records] == [cancelled.id] == [r.task_id for r in since.records]
    assert records[3].state == pb.TASK_STATE_CANCELLED and records[3].qpu_seconds == pytest.approx(held, abs=1e-3)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "next_page_token" in bad.value.details()
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def _tokens(directory: Path) -> Path:
    path = directory / "tokens.toml"
    path.write_text('[[token]]\nname = "alice"\ntoken = "alice-token-0123456789"\n\n'
                    '[[token]]\nname = "bob"\ntoken = "bob-token-0123456789ab"\n\n'
                    '[[token]]\nname = "ops"\ntoken = "ops-token-0123456789ab"\nadmin = true\n')
    path.chmod(0o600)
    return path


async def test_users_see_only_their_own_accounting_records_and_admins_see_all() -> None:
    cfg = config(NOOP, daemon={"auth": "token"}, auth={"tokens_file": str(_tokens(short_dir()))},
                 metrics={"address": "127.0.0.1:0"})
    async with running(cfg) as daemon, grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
        qr = QuantumResourcesAs(channel)
        for user in ("alice", "bob", "alice"):
            await qr.run(user)
        metrics = mpb_grpc.MetricsServiceStub(channel)
        listed = {user: await metrics.ListAccounting(mpb.ListAccountingRequest(), metadata=_bearer(user))
                  for user in ("alice", "bob", "ops")}
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await metrics.ListAccounting(mpb.ListAccountingRequest(owner="bob"), metadata=_bearer("alice"))
        used = await metrics.GetUtilization(mpb.GetUtilizationRequest(resource="fast"), metadata=_bearer("bob"))
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await metrics.GetUtilization(mpb.GetUtilizationRequest())
        samples = await scrape(daemon)
    assert [r.owner for r in listed["alice"].records] == ["alice", "alice"]
    assert [r.owner for r in listed["bob"].records] == ["bob"]
    assert [r.owner for r in listed["ops"].records] == ["alice", "bob", "alice"]
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [(u.resource, u.tasks_completed) for u in used.resources] == [("fast", 3)]
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    method = "/qrmid.v1.MetricsService/GetUtilization"
    assert samples[("qrmid_rpc_duration_seconds_count", (("code", "UNAUTHENTICATED"), ("method", method)))] == 1
    assert samples[("qrmid_rpc_duration_seconds_count", (("code", "PERMISSION_DENIED"),
                                                         ("method", "/qrmid.v1.MetricsService/ListAccounting")))] == 1
    assert samples[("qrmid_usage_tasks_total", (("account", "alice"), ("owner", "alice"), ("resource", "fast")))] == 2


def _bearer(user: str) -> tuple[tuple[str, str]]:
    token = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab", "ops": "ops-token-0123456789ab"}
    return (("authorization", f"Bearer {token[user]}"),)


class QuantumResourcesAs:
    """Runs a short task on ``fast`` as a given token user."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

        self.stub = pb_grpc.QuantumResourcesStub(channel)

    async def run(self, user: str) -> None:
        request = pb.StartTaskRequest(resource="fast", payload=pulser_payload(SEQUENCE, 1))
        task = await self.stub.StartTask(request, metadata=_bearer(user))
        async for _ in self.stub.WatchTask(pb.WatchTaskRequest(task_id=task.id), metadata=_bearer(user)):
            pass
