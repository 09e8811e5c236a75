"""AdminService over real gRPC: every RPC for an admin, PERMISSION_DENIED for everyone else, and config reload
(RPC and SIGHUP) that adds, removes and changes resources while tasks are in flight, dropping none."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from daemons import config, running, short_dir, subprocess_daemon
from test_authz import tokens_file

from qrmid.client import AsyncClient, Client, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.daemon import Daemon
from qrmid.ops.config import load
from qrmid.v1 import admin_pb2 as admin_pb
from qrmid.v1 import admin_pb2_grpc as admin_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

SEQUENCE = {"version": "1"}
RUN = pulser_payload(SEQUENCE, 1)


def noop(name: str, **keys: object) -> str:
    lines = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in keys.items())
    return f'[[resources]]\ntype = "noop"\nname = "{name}"\n{lines}'


@dataclass
class Admin:
    """A daemon started from a config file, an admin and a user talking to it."""

    daemon: Daemon
    path: Path
    head: str  # the config file's sections other than resources
    ops: admin_grpc.AdminServiceStub
    ops_client: AsyncClient
    alice: AsyncClient
    bob_admin: admin_grpc.AdminServiceStub  # bob, who is no admin, on the admin service


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    tokens, secrets = tokens_file({"alice": False, "bob": False, "ops": True})
    scratch = short_dir()
    head = (f'[daemon]\nsocket = "{scratch / "qrmid.sock"}"\nshutdown_grace_seconds = 5\nauth = "token"\n'
            f'[auth]\ntokens_file = "{tokens}"\n[journal]\npath = "{scratch / "journal.db"}"\n')
    path = scratch / "qrmid.toml"
    path.write_text(head + noop("slow", slots=1, delay_seconds=30) + noop("fast", slots=4))
    daemon = Daemon(load(path), path)
    await daemon.start()
    address = f"unix:{daemon.socket}"
    channels = [ClientAuth("token", token=secrets[name]).channel(address, options=[]) for name in ("ops", "bob")]
    clients = [AsyncClient(address, auth=ClientAuth("token", token=secrets[name])) for name in ("ops", "alice")]
    try:
        yield Admin(daemon, path, head, admin_grpc.AdminServiceStub(channels[0]), clients[0], clients[1],
                    admin_grpc.AdminServiceStub(channels[1]))
    finally:
        for client in clients:
            await client.close()
        for channel in channels:
            await channel.close()
        await daemon.stop()


async def failure(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value.code(), error.value.details() or ""


async def until(check: Callable[[], object], timeout: float = 60) -> None:
    """Wait until ``check()`` (which may be a coroutine function) is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"{check} still false after {timeout} s"
        await asyncio.sleep(0.05)


async def test_every_admin_rpc_is_denied_to_other_users(admin: Admin) -> None:
    stub = admin.bob_admin
    calls = {
        "DrainResource": stub.DrainResource(admin_pb.DrainResourceRequest(resource="slow")),
        "ResumeResource": stub.ResumeResource(admin_pb.ResumeResourceRequest(resource="slow")),
        "ReloadConfig": stub.ReloadConfig(admin_pb.ReloadConfigRequest()),
        "ListQueues": stub.ListQueues(admin_pb.ListQueuesRequest()),
        "CancelTask": stub.CancelTask(admin_pb.CancelTaskRequest(task_id="x")),
        "ListAllLeases": stub.ListAllLeases(admin_pb.ListAllLeasesRequest()),
        "RevokeLease": stub.RevokeLease(admin_pb.RevokeLeaseRequest(lease_id="x")),
        "SetLogLevel": stub.SetLogLevel(admin_pb.SetLogLevelRequest(level="debug")),
        "ListQuarantine": stub.ListQuarantine(admin_pb.ListQuarantineRequest()),
        "ListSlurmGates": stub.ListSlurmGates(admin_pb.ListSlurmGatesRequest()),
    }
    for name, call in calls.items():
        expected = f"{name} requires an admin (uid 0 or a service token marked admin); bob is not one"
        assert await failure(call) == (grpc.StatusCode.PERMISSION_DENIED, expected)
    assert admin.daemon.broker.resources["slow"].draining is False


async def test_drain_holds_queued_tasks_and_resume_runs_them(admin: Admin) -> None:
    drained = await admin.ops.DrainResource(admin_pb.DrainResourceRequest(resource="fast", reason="maintenance"))
    assert (drained.status, drained.status_reason) == (pb.RESOURCE_STATUS_DRAINING, "maintenance")
    seen = await admin.alice.resource("fast")
    assert (seen.status, seen.status_reason) == (pb.RESOURCE_STATUS_DRAINING, "maintenance")
    task = await admin.alice.start_task("fast", RUN)
    await asyncio.sleep(0.5)  # a dispatch would have happened by now
    assert (await admin.alice.task(task.id)).state == pb.TASK_STATE_QUEUED
    resumed = await admin.ops.ResumeResource(admin_pb.ResumeResourceRequest(resource="fast"))
    assert resumed.status == pb.RESOURCE_STATUS_ONLINE
    states = [seen.state async for seen in admin.alice.watch(task.id)]
    assert states[-1] == pb.TASK_STATE_COMPLETED
    assert (await failure(admin.ops.DrainResource(admin_pb.DrainResourceRequest(resource="nope"))))[0] \
        == grpc.StatusCode.NOT_FOUND


async def test_queues_list_running_then_queued_in_dispatch_order(admin: Admin) -> None:
    first = await admin.alice.start_task("slow", RUN)
    await until(lambda: admin.daemon.broker.task(first.id).view.state.value == "running")
    queued = [await admin.alice.start_task("slow", RUN) for _ in range(2)]
    theirs = await admin.ops_client.start_task("slow", RUN)
    other = await admin.alice.start_task("fast", pulser_payload(SEQUENCE, 1))
    await until(lambda: admin.daemon.broker.task(other.id).view.state.value == "completed")
    listed = (await admin.ops.ListQueues(admin_pb.ListQueuesRequest())).tasks
    assert listed[0].id == first.id and listed[0].state == pb.TASK_STATE_RUNNING
    rest = listed[1:]
    assert {task.id for task in rest} == {task.id for task in [*queued, theirs]}
    assert [task.queue_position for task in rest] == [1, 2, 3]
    for task in rest:
        assert (await admin.ops_client.task(task.id)).queue_position == task.queue_position
    mine = (await admin.ops.ListQueues(admin_pb.ListQueuesRequest(owner="alice"))).tasks
    assert [task.id for task in mine] == [task.id for task in listed if task.owner == "alice"]
    assert (await admin.ops.ListQueues(admin_pb.ListQueuesRequest(resource="fast"))).tasks == []


async def test_an_admin_cancels_any_task(admin: Admin) -> None:
    first = await admin.alice.start_task("slow", RUN)
    second = await admin.alice.start_task("slow", RUN)
    cancelled = await admin.ops.CancelTask(admin_pb.CancelTaskRequest(task_id=second.id, reason="too big"))
    assert (cancelled.state, cancelled.reason) == (pb.TASK_STATE_CANCELLED, "too big")
    cancelled = await admin.ops.CancelTask(admin_pb.CancelTaskRequest(task_id=first.id))
    assert (cancelled.state, cancelled.reason) == (pb.TASK_STATE_CANCELLED, "cancelled by an admin")
    assert (await admin.alice.task(first.id)).state == pb.TASK_STATE_CANCELLED
    assert (await failure(admin.ops.CancelTask(admin_pb.CancelTaskRequest(task_id="nope"))))[0] \
        == grpc.StatusCode.NOT_FOUND


async def test_admins_list_and_revoke_anyones_leases(admin: Admin) -> None:
    hers = await admin.alice.acquire("slow")
    own = await admin.ops_client.acquire("fast")
    task = await admin.alice.start_task("slow", RUN, lease_token=hers.token)
    listed = (await admin.ops.ListAllLeases(admin_pb.ListAllLeasesRequest())).leases
    assert [(lease.id, lease.owner, lease.token) for lease in listed] == [(hers.id, "alice", ""), (own.id, "ops", "")]
    only = (await admin.ops.ListAllLeases(admin_pb.ListAllLeasesRequest(owner="alice", resource="slow"))).leases
    assert [lease.id for lease in only] == [hers.id]
    revoked = await admin.ops.RevokeLease(admin_pb.RevokeLeaseRequest(lease_id=hers.id, reason="job ended"))
    assert (revoked.lease.id, revoked.cancelled_tasks) == (hers.id, 1)
    ended = await admin.alice.task(task.id)
    assert (ended.state, ended.reason) == (pb.TASK_STATE_CANCELLED, "job ended")
    assert await admin.alice.list_leases() == []
    assert (await failure(admin.alice.release(hers.token)))[0] == grpc.StatusCode.NOT_FOUND
    assert (await failure(admin.ops.RevokeLease(admin_pb.RevokeLeaseRequest(lease_id=hers.id))))[0] \
        == grpc.StatusCode.NOT_FOUND


async def test_log_level_changes_at_run_time(admin: Admin) -> None:
    before = logging.getLevelName(logging.getLogger().level).lower()
    assert (await admin.ops.SetLogLevel(admin_pb.SetLogLevelRequest(level="error"))).previous == before
    assert (await admin.ops.SetLogLevel(admin_pb.SetLogLevelRequest(level="debug"))).previous == "error"
    assert logging.getLogger().level == logging.DEBUG
    code, detail = await failure(admin.ops.SetLogLevel(admin_pb.SetLogLevelRequest(level="loud")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "loud" in detail
    assert (await admin.ops.SetLogLevel(admin_pb.SetLogLevelRequest(level=before))).previous == "debug"


async def test_reload_adds_removes_and_changes_resources_without_dropping_tasks(admin: Admin) -> None:
    admin.path.write_text(admin.head + noop("gone", slots=1, delay_seconds=1) + noop("changed", slots=1, delay_seconds=1)
                          + noop("tuned", slots=1, delay_seconds=1))
    first = await admin.ops.ReloadConfig(admin_pb.ReloadConfigRequest())
    assert (list(first.added), list(first.removed), list(first.changed)) == (["gone", "changed", "tuned"],
                                                                             ["slow", "fast"], [])
    tasks = {name: [await admin.alice.start_task(name, RUN) for _ in range(3)] for name in ("gone", "changed", "tuned")}
    await until(lambda: all(admin.daemon.broker.task(task[0].id).view.state.value == "running"
                            for task in tasks.values()))

    admin.path.write_text(admin.head + noop("changed", slots=2, delay_seconds=1)
                          + noop("tuned", slots=1, delay_seconds=1, queue_limit=7) + noop("new", slots=3)
                          + '[leases]\nmax_ttl_seconds = 100\n')
    reply = await admin.ops.ReloadConfig(admin_pb.ReloadConfigRequest())
    assert (list(reply.added), list(reply.removed), list(reply.changed)) == (["new"], ["gone"], ["changed", "tuned"])

    gone = await admin.alice.resource("gone")
    assert gone.status == pb.RESOURCE_STATUS_DRAINING and "removed from the config" in gone.status_reason
    code, detail = await failure(admin.alice.start_task("gone", RUN))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "removed from the config" in detail
    assert admin.daemon.broker.resources["tuned"].scheduler.queue_limit == 7
    lease = await admin.alice.acquire("new", ttl_seconds=1000)
    assert lease.expire_time.seconds - lease.create_time.seconds in (99, 100)
    done = await admin.alice.run("new", RUN)
    assert done[0].state == pb.TASK_STATE_COMPLETED

    for task in [task for line in tasks.values() for task in line]:  # every task in flight ends, none dropped
        states = [seen.state async for seen in admin.alice.watch(task.id)]
        assert states[-1] == pb.TASK_STATE_COMPLETED, (task.resource, states)
    await until(lambda: "gone" not in admin.daemon.broker.resources)
    assert [r.name for r in await admin.alice.list_resources()] == ["changed", "tuned", "new"]
    changed = await admin.alice.resource("changed")
    assert (changed.status, changed.capacity.slots_total) == (pb.RESOURCE_STATUS_ONLINE, 2)
    assert (await admin.alice.task(tasks["gone"][2].id)).state == pb.TASK_STATE_COMPLETED  # still on record


async def test_a_bad_config_is_refused_and_the_old_one_stays(admin: Admin) -> None:
    admin.path.write_text(admin.head + noop("fast", slots=0))
    code, detail = await failure(admin.ops.ReloadConfig(admin_pb.ReloadConfigRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(admin.path) in detail and "resources[0].slots" in detail
    admin.path.write_text("not toml [")
    code, detail = await failure(admin.ops.ReloadConfig(admin_pb.ReloadConfigRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not valid TOML" in detail
    assert [r.name for r in await admin.alice.list_resources()] == ["slow", "fast"]
    assert (await admin.alice.run("fast", RUN))[0].state == pb.TASK_STATE_COMPLETED


def test_sighup_reloads_a_running_daemon() -> None:
    with subprocess_daemon(noop("fast", slots=2)) as (address, process):
        path = Path(address.removeprefix("unix:")).parent / "qrmid.toml"
        text = path.read_text()
        path.write_text(text + noop("added", slots=1))
        process.send_signal(signal.SIGHUP)
        with Client(address) as client:
            deadline = time.monotonic() + 60
            while [r.name for r in client.list_resources()] != ["fast", "added"]:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
            assert client.run("added", RUN)[0].state == pb.TASK_STATE_COMPLETED
            path.write_text("broken [")
            process.send_signal(signal.SIGHUP)  # refused: the old config stays
            assert [r.name for r in client.list_resources()] == ["fast", "added"]
            path.write_text(text + noop("later", slots=1))
            process.send_signal(signal.SIGHUP)  # reloads run in order: this one sees the failed one's result
            while [r.name for r in client.list_resources()] != ["fast", "later"]:
                assert time.monotonic() < deadline + 60 and process.poll() is None
                time.sleep(0.1)


async def test_a_daemon_without_a_config_file_has_nothing_to_reload() -> None:
    async with running(config([{"type": "noop", "name": "fast"}])) as daemon:
        channel = grpc.aio.insecure_channel(f"unix:{daemon.socket}")
        try:
            code, detail = await failure(admin_grpc.AdminServiceStub(channel).ReloadConfig(admin_pb.ReloadConfigRequest()))
        finally:
            await channel.close()
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "start it with --config FILE" in detail


async def test_an_admin_drain_outlasts_a_reload_that_swaps_the_adapter(admin: Admin) -> None:
    await admin.ops.DrainResource(admin_pb.DrainResourceRequest(resource="fast", reason="maintenance"))
    task = await admin.alice.start_task("fast", RUN)
    admin.path.write_text(admin.head + noop("slow", slots=1, delay_seconds=30) + noop("fast", slots=2))
    reply = await admin.ops.ReloadConfig(admin_pb.ReloadConfigRequest())
    assert list(reply.changed) == ["fast"]
    await until(lambda: admin.daemon.broker.resources["fast"].adapter.slots == 2)
    fast = await admin.alice.resource("fast")
    assert (fast.status, fast.status_reason, fast.capacity.slots_total) == (pb.RESOURCE_STATUS_DRAINING, "maintenance", 2)
    assert (await admin.alice.task(task.id)).state == pb.TASK_STATE_QUEUED
    await admin.ops.ResumeResource(admin_pb.ResumeResourceRequest(resource="fast"))
    assert [seen.state async for seen in admin.alice.watch(task.id)][-1] == pb.TASK_STATE_COMPLETED
