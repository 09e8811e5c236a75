"""The test cluster (tests/cluster.py): real members on one PostgreSQL database, each serving on its own socket and
TCP listener, killed, restarted and stopped one at a time while the others serve."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster import Cluster
from postgres import Database

from qrmid.client import Client, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.v1 import quantum_resources_pb2 as pb

NOOP = '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 2\n'


def slots(address: str, auth: ClientAuth | None = None) -> int:
    with Client(address, timeout=30, auth=auth) as client:
        return client.resource("noop").capacity.slots_total


def test_members_share_the_database_and_each_serves_on_its_socket_and_tcp(database: Database, tmp_path: Path) -> None:
    own = {"m2": NOOP.replace("slots = 2", "slots = 3")}
    with Cluster(database, NOOP, members=2, tmp=tmp_path, own=own) as cluster:
        assert cluster.names == ["m1", "m2"]
        m1, m2 = cluster.member("m1"), cluster.member("m2")
        assert cluster.address == f"{m1.address},{m2.address}"
        assert m1.socket.parent != m2.socket.parent and m1.tcp != m2.tcp
        token = ClientAuth.resolve("token", token_file=cluster.token_file)
        assert (slots(m1.address), slots(m1.tcp, token)) == (2, 2)
        assert (slots(m2.address), slots(m2.tcp, token)) == (3, 3), "m2 serves its own resources text"
        with database.connect() as conn:
            assert {row[0] for row in conn.execute("SELECT name FROM members")} == {"m1", "m2"}
        with Client(cluster.address, timeout=60) as client:
            done = client.wait(client.start_task("noop", pulser_payload({"sequence": "x"}, 3)).id)
        assert done.state == pb.TASK_STATE_COMPLETED

        cluster.kill("m1")
        assert not m1.running and m1.process is not None and m1.process.returncode == -9
        assert slots(cluster.address) == 3, "the cluster's address is served by the member left"
        cluster.start("m1")
        assert m1.running and slots(m1.address) == 2
        cluster.stop("m2")
        assert not m2.running and m2.process is not None and m2.process.returncode == 0
        assert slots(cluster.address) == 2
    assert not m1.running, "leaving the cluster stops its members"
    for member in (m1, m2):
        text = member.log.read_text()
        assert member.name in text and member.log.parent == tmp_path / member.name
        assert database.password not in text


def test_a_member_started_twice_or_an_unknown_member_is_refused(database: Database, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no such member\(s\) \['m3'\]: the members are \['m1', 'm2'\]"):
        Cluster(database, NOOP, members=2, tmp=tmp_path, own={"m3": NOOP})
    with Cluster(database, NOOP, members=1, tmp=tmp_path) as cluster, \
            pytest.raises(RuntimeError, match="member m1 is running already"):
        cluster.start("m1")
