"""RunTask on a local backend starts its task while the task's acceptance commits (an eager task), against a real
daemon over its socket with its journal's commits held or failed in the writer thread: the caller sees nothing before
the task is durable, a StartTask's task still waits for its record before it runs, and a task whose record fails is
refused and leaves no trace."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import grpc
import pytest
from daemons import config, running
from test_journal import Gate

from qrmid.client import AsyncClient, pulser_payload
from qrmid.core.tasks import Task, TaskState
from qrmid.daemon import Daemon
from qrmid.store.journal import Journal
from qrmid.v1 import metrics_pb2, metrics_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

NOOP = [{"type": "noop", "name": "noop", "slots": 4}]
PAYLOAD = pulser_payload({"sequence": "x"}, 3)


def request(request_id: str) -> pb.StartTaskRequest:
    return pb.StartTaskRequest(resource="noop", payload=PAYLOAD, client_request_id=request_id)


def held_commits(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> Gate:
    """Every commit of the journal from now on waits in the writer thread until released (or fails)."""
    gate = Gate(fail)
    monkeypatch.setattr(Journal, "before_commit", gate)
    return gate


async def only_task(daemon: Daemon, request_id: str) -> Task:
    """The task the daemon made for ``request_id``, once it has made it."""
    for _ in range(3000):
        found = [task for task in daemon.broker.tasks(None)[0] if task.client_request_id == request_id]
        if found:
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no task for request {request_id}")


async def until(condition: object, what: str) -> None:
    for _ in range(3000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not {what} after 30 s")


async def test_a_run_task_runs_while_its_acceptance_commits_and_shows_nothing_before_it_is_durable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(NOOP)
    async with running(cfg) as daemon, grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel, \
            AsyncClient(f"unix:{daemon.socket}", timeout=60) as qrmid:
        stub = pb_grpc.QuantumResourcesStub(channel)
        gate = held_commits(monkeypatch)
        call = stub.RunTask(request("eager"), timeout=60)
        first = asyncio.ensure_future(call.read())
        eager = await only_task(daemon, "eager")
        await until(lambda: eager.state is TaskState.COMPLETED, "run to its end while its acceptance commits")
        assert await asyncio.to_thread(gate.entered.wait, 30), "its writes reached the writer"
        assert not first.done(), "the caller sees nothing before the task is durable"
        assert eager.shown.state is TaskState.QUEUED

        started = asyncio.ensure_future(qrmid.start_task("noop", PAYLOAD, request_id="waits"))
        waiting = await only_task(daemon, "waits")
        await asyncio.sleep(0.3)
        assert waiting.state is TaskState.QUEUED, "a StartTask's task runs only once its record is durable"
        assert not started.done()

        gate.release.set()
        messages = [await first]
        while (message := await call.read()) is not grpc.aio.EOF:
            messages.append(message)
        assert [m.WhichOneof("update") for m in messages] == ["task", "result_chunk"], "no state it had left"
        assert messages[0].task.state == pb.TASK_STATE_COMPLETED
        assert json.loads(messages[-1].result_chunk.data) == {"task": eager.id}
        assert (await qrmid.wait((await started).id)).state == pb.TASK_STATE_COMPLETED
    with sqlite3.connect(cfg.journal.path) as db:
        rows = db.execute("SELECT client_request_id, state FROM tasks ORDER BY rowid").fetchall()
    assert rows == [("eager", "completed"), ("waits", "completed")]


async def test_a_run_task_whose_record_fails_is_refused_and_leaves_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(NOOP)
    async with running(cfg) as daemon, grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel, \
            AsyncClient(f"unix:{daemon.socket}", timeout=60) as qrmid:
        stub = pb_grpc.QuantumResourcesStub(channel)
        failing = held_commits(monkeypatch, fail=True)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            [message async for message in stub.RunTask(request("lost"), timeout=60)]
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "disk I/O error" in (refused.value.details() or "")
        assert failing.entered.is_set()
        assert await qrmid.list_tasks() == [], "refused: the task is not kept"
        accounting = metrics_pb2_grpc.MetricsServiceStub(channel)
        assert list((await accounting.ListAccounting(metrics_pb2.ListAccountingRequest())).records) == [], \
            "nor accounted"
        monkeypatch.setattr(Journal, "before_commit", None)
        messages: list[pb.RunTaskResponse] = []
        while not messages:  # the writer retries with backoff; the daemon takes tasks once it got through
            try:
                messages = [message async for message in stub.RunTask(request("lost"), timeout=60)]
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        task = messages[-2].task
        assert task.state == pb.TASK_STATE_COMPLETED and task.client_request_id == "lost"
    with sqlite3.connect(cfg.journal.path) as db:
        rows = db.execute("SELECT id, state FROM tasks").fetchall()
    assert rows == [(task.id, "completed")], "the refused task's late record was deleted"
