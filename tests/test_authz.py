"""Authorization over real gRPC: tasks are visible and stoppable only by their owner or an admin, leases are
bound to their owner, and Acquire's Slurm job check refuses what it cannot verify. Callers are told apart by
the daemon's ``token`` authentication (two users and one admin service)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from daemons import config, running, short_dir

from qrmid.client import AsyncClient, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.v1 import quantum_resources_pb2 as pb

SEQUENCE = {"version": "1"}
RESOURCES = [{"type": "noop", "name": "slow", "slots": 1, "delay_seconds": 60},
             {"type": "noop", "name": "fast", "slots": 4}]


@dataclass
class Callers:
    alice: AsyncClient
    bob: AsyncClient
    ops: AsyncClient  # an admin service


def tokens_file(names: dict[str, bool]) -> tuple[Path, dict[str, str]]:
    """A 0600 tokens file for the given service names (name -> admin) and their tokens."""
    tokens = {name: secrets.token_urlsafe(24) for name in names}
    path = short_dir() / "tokens.toml"
    path.write_text("".join(f'[[token]]\nname = "{name}"\ntoken = "{tokens[name]}"\nadmin = {str(admin).lower()}\n'
                            for name, admin in names.items()))
    path.chmod(0o600)
    return path, tokens


@pytest.fixture
async def callers() -> AsyncIterator[Callers]:
    path, tokens = tokens_file({"alice": False, "bob": False, "ops": True})
    cfg = config(RESOURCES, daemon={"auth": "token"}, auth={"tokens_file": str(path)},
                 slurm={"check_jobs": True})
    async with running(cfg) as daemon:
        address = f"unix:{daemon.socket}"
        clients = [AsyncClient(address, auth=ClientAuth("token", token=tokens[name])) for name in tokens]
        try:
            yield Callers(*clients)
        finally:
            for client in clients:
                await client.close()


async def denied(call: object) -> str:
    """The details of a call that must end in PERMISSION_DENIED."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED, error.value.details()
    return error.value.details() or ""


async def test_only_the_owner_and_admins_see_and_stop_a_task(callers: Callers) -> None:
    task = await callers.alice.start_task("slow", pulser_payload(SEQUENCE, 1))
    assert task.owner == "alice"
    message = f"task {task.id} belongs to another user"
    assert await denied(callers.bob.task(task.id)) == message
    assert await denied(callers.bob.logs(task.id)) == message
    assert await denied(callers.bob.result(task.id)) == message
    assert await denied(callers.bob.stop_task(task.id)) == message
    assert await denied(callers.bob.watch(task.id).__anext__()) == message
    assert (await callers.alice.task(task.id)).state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING)
    assert (await callers.ops.task(task.id)).owner == "alice"
    stopped = await callers.ops.stop_task(task.id)
    assert stopped.state == pb.TASK_STATE_CANCELLED and stopped.reason == "stopped by ops, an admin"
    assert (await callers.alice.task(task.id)).reason == "stopped by ops, an admin"


async def test_the_owner_watches_and_reads_their_own_task(callers: Callers) -> None:
    task = await callers.bob.start_task("fast", pulser_payload(SEQUENCE, 1))
    states = [seen.state async for seen in callers.bob.watch(task.id)]
    assert states[-1] == pb.TASK_STATE_COMPLETED
    assert await callers.bob.result(task.id)
    assert await callers.bob.logs(task.id) == "noop\n"
    stopped = await callers.bob.stop_task(task.id)  # already ended: no change, but the owner may ask
    assert stopped.state == pb.TASK_STATE_COMPLETED


async def test_a_lease_serves_only_its_owner(callers: Callers) -> None:
    lease = await callers.alice.acquire("fast")
    assert lease.owner == "alice"
    assert await denied(callers.bob.release(lease.token)) == f"lease {lease.id} belongs to another user"
    assert await denied(callers.bob.start_task("fast", pulser_payload(SEQUENCE, 1), lease_token=lease.token)) \
        == f"lease {lease.id} belongs to another user"
    assert [held.id for held in await callers.bob.list_leases()] == []
    assert [held.id for held in await callers.alice.list_leases()] == [lease.id]
    await callers.alice.release(lease.token)


async def test_an_admin_releases_another_users_lease_by_token(callers: Callers) -> None:
    lease = await callers.alice.acquire("slow")
    task = await callers.alice.start_task("slow", pulser_payload(SEQUENCE, 1), lease_token=lease.token)
    released = await callers.ops.release(lease.token)
    assert released.lease.id == lease.id and released.lease.owner == "alice" and released.cancelled_tasks == 1
    ended = await callers.alice.task(task.id)
    assert ended.state == pb.TASK_STATE_CANCELLED and ended.reason == "its lease was released by ops, an admin"
    assert await callers.alice.list_leases() == []
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await callers.alice.release(lease.token)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_request_ids_are_per_owner(callers: Callers) -> None:
    first = await callers.alice.start_task("fast", pulser_payload(SEQUENCE, 1), request_id="same")
    second = await callers.bob.start_task("fast", pulser_payload(SEQUENCE, 1), request_id="same")
    assert first.id != second.id and (first.owner, second.owner) == ("alice", "bob")


async def test_a_slurm_job_cannot_be_checked_for_a_caller_without_uid(callers: Callers) -> None:
    detail = await denied(callers.alice.acquire("fast", slurm_job_id="42"))
    assert detail.startswith("cannot check that Slurm job 42 is yours: your identity has no uid")
    assert [held.id for held in await callers.alice.list_leases()] == []


async def test_a_malformed_slurm_job_id_is_invalid(callers: Callers) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await callers.alice.acquire("fast", slurm_job_id="42; rm -rf /")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a Slurm job id" in (error.value.details() or "")


async def test_slurm_checks_without_squeue_are_unavailable_and_the_daemon_keeps_serving() -> None:
    cfg = config(RESOURCES, slurm={"check_jobs": True, "squeue": str(short_dir() / "no-squeue")})
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await client.acquire("fast", slurm_job_id="42")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "to check Slurm jobs" in (error.value.details() or "")
        assert (await client.acquire("fast")).resource == "fast"  # without a job id no check is needed
