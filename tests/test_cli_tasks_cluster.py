"""``ListTasks`` and ``qrmid tasks`` in cluster mode, on a real PostgreSQL: every member lists every task of the
cluster alike, whichever member took it and whichever dispatches it; ``qrmid admin cluster`` on an 80-column
terminal and piped."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from daemons import ROOT
from postgres import Database
from terminal import in_terminal
from test_cluster import PAYLOAD, dispatcher, member, noop

from qrmid.client import AsyncClient
from qrmid.v1 import quantum_resources_pb2 as pb


async def test_every_member_lists_the_tasks_of_the_whole_cluster(database: Database) -> None:
    async with member(database, "a", noop(60, slots=1)) as a, member(database, "b", noop(60, slots=1)) as b:
        leader = await dispatcher(a, b)
        other = b if leader is a else a
        async with AsyncClient(f"unix:{other.socket}") as there, AsyncClient(f"unix:{leader.socket}") as here:

            async def listed(client: AsyncClient) -> list[tuple[str, int, int]]:
                return [(t.id, t.state, t.queue_position) for t in await client.list_tasks(resource="noop")]

            ids = []
            for client in (there, here, there):  # each listed on both members before the next is started
                ids.append((await client.start_task("noop", PAYLOAD)).id)
                deadline = time.monotonic() + 30
                while not all([ids[-1] in {t[0] for t in await listed(c)} for c in (there, here)]):
                    assert time.monotonic() < deadline, f"task {ids[-1]} is not listed on every member"
                    await asyncio.sleep(0.05)
            expected = [(ids[0], pb.TASK_STATE_RUNNING, 0), (ids[1], pb.TASK_STATE_QUEUED, 1),
                        (ids[2], pb.TASK_STATE_QUEUED, 2)]
            deadline = time.monotonic() + 30
            while (await listed(there), await listed(here)) != (expected, expected):
                assert time.monotonic() < deadline, (await listed(there), await listed(here), expected)
                await asyncio.sleep(0.1)

            address = f"unix:{other.socket},unix:{leader.socket}"
            shown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "qrmid", "tasks", "--json"],
                                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                                            env={**os.environ, "QRMID_ADDRESS": address})
            assert shown.returncode == 0, shown.stderr
            assert [task["id"] for task in json.loads(shown.stdout)] == ids
            for task_id in reversed(ids):
                await there.stop_task(task_id)
            assert [t.id for t in await here.list_tasks(states=[pb.TASK_STATE_CANCELLED])] == ids
            assert await here.list_tasks(states=[pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING]) == []


async def test_admin_cluster_fits_a_terminal_and_parses_piped(database: Database) -> None:
    async with member(database, "first-member-of-the-cluster", noop()) as a, \
            member(database, "second-member-of-the-cluster", noop()) as b:
        await dispatcher(a, b)
        address = f"unix:{a.socket}"
        status, shown, stderr = await asyncio.to_thread(in_terminal, "admin", "cluster", address=address)
        assert status == 0, stderr
        assert {"first-member-of-the-cluster", "second-member-of-the-cluster"} <= set(shown.split()), shown
        assert max(len(line) for line in shown.splitlines()) <= 80 and "…" not in shown, shown
        piped = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "qrmid", "admin", "cluster", "-o",
                                                         "json"], cwd=ROOT, capture_output=True, text=True,
                                        timeout=120, env={**os.environ, "QRMID_ADDRESS": address})
        assert piped.returncode == 0, piped.stderr
        assert sorted(m["name"] for m in json.loads(piped.stdout)["members"]) == \
            ["first-member-of-the-cluster", "second-member-of-the-cluster"]
