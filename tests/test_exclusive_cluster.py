"""Exclusive leases in cluster mode, two members in this process on a real PostgreSQL: two members asked at once never
grant two exclusive leases on one resource, and the dispatching member holds other tasks back whatever member granted
the lease."""

from __future__ import annotations

import asyncio
import time

from postgres import Database
from test_cluster import PAYLOAD, dispatcher, member, noop

from qrmid.client import AsyncClient
from qrmid.v1 import quantum_resources_pb2 as pb


def stored_modes(database: Database) -> list[tuple[str, str]]:
    with database.connect() as conn:
        return [(row[0], row[1]) for row in conn.execute(
            "SELECT id, mode FROM leases WHERE expires_at > %s ORDER BY created_at", (time.time(),))]


async def test_two_members_asked_at_once_grant_one_exclusive_lease_and_the_dispatcher_holds_the_others(
        database: Database) -> None:
    async with member(database, "a", noop(0.2)) as a, member(database, "b", noop(0.2)) as b, \
            AsyncClient(f"unix:{a.socket}") as on_a, AsyncClient(f"unix:{b.socket}") as on_b:
        leader = await dispatcher(a, b)
        for _ in range(10):  # rounds of two members asked at the same instant
            asked = {asyncio.create_task(client.acquire("noop", mode="exclusive", wait=30)): client
                     for client in (on_a, on_b)}
            done, pending = await asyncio.wait(asked, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1
            first, waiting = done.pop(), pending.pop()
            granted = first.result()
            await asyncio.sleep(0.3)
            assert not waiting.done(), "the second waits while the first holds the resource"
            assert [lease_id for lease_id, mode in stored_modes(database) if mode == "exclusive"] == [granted.id]
            await asked[first].release(granted.token)
            second = await asyncio.wait_for(waiting, 30)
            assert [lease_id for lease_id, mode in stored_modes(database) if mode == "exclusive"] == [second.id]
            await asked[waiting].release(second.token)

        granting = on_b if leader is a else on_a  # the member that does not dispatch grants it
        lease = await granting.acquire("noop", slurm_job_id="9", mode="exclusive", wait=30)
        while getattr(leader.broker.leases.exclusive("noop"), "id", None) != lease.id:  # notified in milliseconds
            await asyncio.sleep(0.01)
        others = [await client.start_task("noop", PAYLOAD) for client in (on_a, on_b)]
        mine = await granting.start_task("noop", PAYLOAD, lease_token=lease.token)
        assert (await on_b.wait(mine.id)).state == pb.TASK_STATE_COMPLETED
        for task in others:
            shown = await on_a.task(task.id)
            assert shown.state == pb.TASK_STATE_QUEUED
            assert shown.wait_reason == "resource noop is held by the exclusive lease of Slurm job 9 (user root)"
        await granting.release(lease.token)
        for task in others:
            assert (await on_b.wait(task.id)).state == pb.TASK_STATE_COMPLETED


async def test_an_exclusive_acquire_waiting_on_another_member_holds_the_dispatchers_tasks_back_and_keeps_its_turn(
        database: Database) -> None:
    async with member(database, "a", noop(1.0)) as a, member(database, "b", noop(1.0)) as b:
        leader = await dispatcher(a, b)
        other = b if leader is a else a
        async with AsyncClient(f"unix:{leader.socket}") as on_leader, AsyncClient(f"unix:{other.socket}") as on_other:
            busy = [await on_leader.start_task("noop", PAYLOAD) for _ in range(2)]
            for task in busy:
                while (await on_leader.task(task.id)).state != pb.TASK_STATE_RUNNING:
                    await asyncio.sleep(0.02)
            first = asyncio.create_task(on_other.acquire("noop", slurm_job_id="1", mode="exclusive", wait=30))
            while (await on_leader.resource("noop")).exclusive_waiting != 1:  # the dispatcher heard of it
                await asyncio.sleep(0.02)
            second = asyncio.create_task(on_leader.acquire("noop", slurm_job_id="2", mode="exclusive", wait=30))
            while (await on_other.resource("noop")).exclusive_waiting != 2:
                await asyncio.sleep(0.02)
            late = [await on_leader.start_task("noop", PAYLOAD) for _ in range(3)]  # a stream meanwhile
            assert (await on_leader.task(late[0].id)).wait_reason.startswith(
                "an exclusive lease is waiting for the resource (2 in line)")
            granted = await asyncio.wait_for(first, 30)
            assert granted.slurm_job_id == "1", "the Acquire asked first, on the other member, is granted first"
            await asyncio.sleep(0.5)
            assert not second.done()
            assert [(await on_leader.task(task.id)).state for task in late] == [pb.TASK_STATE_QUEUED] * 3
            await on_other.release(granted.token)
            after = await asyncio.wait_for(second, 30)
            await on_leader.release(after.token)
            for task in late:
                ended = await on_leader.wait(task.id)
                assert ended.state == pb.TASK_STATE_COMPLETED
                assert ended.start_time.ToNanoseconds() >= after.create_time.ToNanoseconds(), \
                    "no task asked for meanwhile started before both exclusive leases were granted"
