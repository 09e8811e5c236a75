"""Clients of a cluster whose first listed member takes connections but never answers (stopped with SIGSTOP, as a host
gone from the network): calls and streams move on to the next member after its connect timeout, well within a
deadline shorter than gRPC's own 20 s connect timeout."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from cluster import TOKEN, Cluster, Member
from postgres import Database

from qrmid.client import Client, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.client_members import CONNECT_TIMEOUT_MS
from qrmid.store.members import DISPATCHERS
from qrmid.v1 import quantum_resources_pb2 as pb

NOOP = '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 1\n'
DEADLINE = 12.0  # seconds each call may take: more than CONNECT_TIMEOUT_MS, less than gRPC's 20 s
assert CONNECT_TIMEOUT_MS / 1000 < DEADLINE < 20


def dispatcher(database: Database, timeout: float = 30) -> str:
    """The member dispatching ``noop``, once there is one."""
    deadline = time.monotonic() + timeout
    with database.connect() as conn:
        while not (rows := [row[1] for row in conn.execute(DISPATCHERS).fetchall() if row[0] == "noop"]):
            assert time.monotonic() < deadline, f"no member dispatches noop after {timeout} s"
            time.sleep(0.1)
    return rows[0]


@pytest.fixture
def hung(database: Database) -> Iterator[tuple[Member, Member]]:
    """Two members: one stopped (not the dispatcher), and the other."""
    with Cluster(database, NOOP, members=2) as cluster:
        leader = dispatcher(database)
        stopped = next(cluster.member(name) for name in cluster.names if name != leader)
        assert stopped.process is not None
        os.kill(stopped.process.pid, signal.SIGSTOP)
        try:
            yield stopped, cluster.member(leader)
        finally:
            os.kill(stopped.process.pid, signal.SIGCONT)


@pytest.mark.parametrize("listener", ["unix", "tcp"])
def test_calls_and_streams_move_on_from_a_member_that_never_answers(hung: tuple[Member, Member], listener: str) -> None:
    stopped, running = hung
    if listener == "unix":
        address, auth = f"{stopped.address},{running.address}", ClientAuth()
    else:
        address, auth = f"{stopped.tcp},{running.tcp}", ClientAuth("token", token=TOKEN)
    with Client(address, timeout=DEADLINE, auth=auth) as client:
        task = client.start_task("noop", pulser_payload({"sequence": "x"}, 3))
        assert client.wait(task.id, timeout=DEADLINE).state == pb.TASK_STATE_COMPLETED
    # each new client starts at the stopped member, with a stream
    with Client(address, timeout=DEADLINE, auth=auth) as client:
        assert client.wait(task.id, timeout=DEADLINE).state == pb.TASK_STATE_COMPLETED
    with Client(address, timeout=DEADLINE, auth=auth) as client:
        assert client.result(task.id) == f'{{"task": "{task.id}"}}'.encode()
