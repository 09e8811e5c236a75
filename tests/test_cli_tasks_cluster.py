"""``ListTasks`` and ``qrmid tasks`` in cluster mode, on a real PostgreSQL: every member lists every task of the
cluster alike, whichever member took it and whichever dispatches it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from daemons import ROOT
from postgres import Database
from test_cluster import PAYLOAD, dispatcher, member, noop

from qrmid.client import AsyncClient
from qrmid.v1 import quantum_resources_pb2 as pb


async def test_every_member_lists_the_tasks_of_the_whole_cluster(database: Database) -> None:
    async with member(database, "a", noop(60, slots=1)) as a, member(database, "b", noop(60, slots=1)) as b:
        leader = await dispatcher(a, b)
        other = b if leader is a else a
        async with AsyncClient(f"unix:{other.socket}") as there, AsyncClient(f"unix:{leader.socket}") as here:
            started = [await there.start_task("noop", PAYLOAD), await here.start_task("noop", PAYLOAD),
                       await there.start_task("noop", PAYLOAD)]
            ids = [task.id for task in started]

            async def listed(client: AsyncClient) -> list[tuple[str, int, int]]:
                return [(t.id, t.state, t.queue_position) for t in await client.list_tasks(resource="noop")]

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
