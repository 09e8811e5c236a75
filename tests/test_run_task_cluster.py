"""RunTask across the members of a cluster (real daemons on one real PostgreSQL database): the member streaming a
task is killed with SIGKILL mid-way, and Client.run goes on at the other member with the same request id, which
finds the same task and streams the rest of it, result included."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

from daemons import short_dir, write_config
from postgres import Database
from test_client_failover import BELL, member, qrmid

from qrmid.client import Client, sampler_payload
from qrmid.v1 import quantum_resources_pb2 as pb


@contextmanager
def two_members(database: Database) -> Iterator[tuple[Path, Path, Popen[bytes]]]:
    """Members node-a and node-b on one database, serving a noop resource drained (so that a task waits in its
    queue); yields their sockets and node-a's process."""
    scratch = short_dir()
    password = write_config(scratch / "pgpass", database.password + "\n")
    stores = [f'[cluster]\ndsn = "{database.dsn}"\npassword_file = "{password}"\nmember = "{name}"\n'
              for name in ("node-a", "node-b")]
    a, b = scratch / "a.sock", scratch / "b.sock"
    with member(a, scratch / "a.db", delay=0.5, store=stores[0]) as first, \
            member(b, scratch / "b.db", delay=0.5, store=stores[1]):
        drained = qrmid("admin", "drain", "noop", "--reason", "maintenance", address=f"unix:{a}")
        assert drained.returncode == 0, drained.stderr
        yield a, b, first


def test_run_goes_on_at_another_member_when_its_member_is_killed(database: Database) -> None:
    seen: list[pb.Task] = []
    queued = threading.Event()

    def on_state(task: pb.Task) -> None:
        seen.append(task)
        queued.set()

    with two_members(database) as (a, b, first), Client(f"unix:{a},unix:{b}", timeout=30) as client, \
            ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(client.run, "noop", sampler_payload(BELL), on_state=on_state)
        assert queued.wait(60), "the task was queued"
        first.kill()
        first.wait()
        resumed = qrmid("admin", "resume", "noop", address=f"unix:{b}")
        assert resumed.returncode == 0, resumed.stderr
        task, result = outcome.result(timeout=120)
        kept = client.list_tasks()
    states = [t.state for t in seen]
    assert states[0] == pb.TASK_STATE_QUEUED and states[-1] == pb.TASK_STATE_COMPLETED
    assert states == sorted(set(states)), f"a state was repeated or went back: {states}"
    assert {t.id for t in seen} == {task.id} and json.loads(result) == {"task": task.id}
    assert [t.id for t in kept] == [task.id], "the same task, not a second one"
