"""``AdminService.ListMembers``/``Handover``, ``qrmid admin cluster``/``handover`` and the
``qrmid_resource_dispatching`` gauge: refused on a single daemon, and on a real cluster of members sharing one
PostgreSQL database, a resource's dispatch moving from one member to the other and back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from click.testing import CliRunner
from cluster import Cluster
from daemons import ROOT, config, running
from postgres import Database
from prometheus_client.parser import text_string_to_metric_families
from test_admin import Admin, admin, failure  # noqa: F401  (fixture: a daemon with an admin and a user)
from test_metrics import NOOP, scrape

from qrmid.cli import main
from qrmid.v1 import admin_pb2 as admin_pb

NOT_A_MEMBER = "this daemon is not a cluster member (its config has no [cluster] section): "
NOOP_TOML = '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 2\n'


# -- a single daemon ----------------------------------------------------------------------------------------------


async def test_a_single_daemon_answers_failed_precondition_and_others_are_denied(admin: Admin) -> None:  # noqa: F811
    for name, call in {"ListMembers": admin.ops.ListMembers(admin_pb.ListMembersRequest()),
                       "Handover": admin.ops.Handover(admin_pb.HandoverRequest(member="m1"))}.items():
        code, details = await failure(call)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert details == f"{NOT_A_MEMBER}{name} applies to daemons sharing one PostgreSQL database (docs/cluster.md)"
    for name, call in {"ListMembers": admin.bob_admin.ListMembers(admin_pb.ListMembersRequest()),
                       "Handover": admin.bob_admin.Handover(admin_pb.HandoverRequest(member="m1"))}.items():
        expected = f"{name} requires an admin (uid 0 or a service token marked admin); bob is not one"
        assert await failure(call) == (grpc.StatusCode.PERMISSION_DENIED, expected)


async def test_the_cli_says_a_single_daemon_is_not_a_cluster_member() -> None:
    async with running(config(NOOP)) as daemon:
        address = f"unix:{daemon.socket}"
        for args in (["cluster"], ["cluster", "--json"], ["handover", "m1"], ["handover", "m1", "--back"]):
            result = await asyncio.to_thread(CliRunner().invoke, main, ["--address", address, "admin", *args])
            assert result.exit_code == 1, result.output
            assert f"Error: FAILED_PRECONDITION: {NOT_A_MEMBER}" in result.output
        assert daemon.broker.resources["fast"].scheduler.leading, "the daemon still dispatches"


async def test_a_single_daemon_dispatches_every_resource_in_its_metrics() -> None:
    async with running(config(NOOP, metrics={"address": "127.0.0.1:0"})) as daemon:
        samples = await scrape(daemon)
    assert {labels: value for (name, labels), value in samples.items() if name == "qrmid_resource_dispatching"} \
        == {(("resource", "fast"),): 1.0, (("resource", "slow"),): 1.0}


# -- a cluster of two members -------------------------------------------------------------------------------------


def qrmid(cluster: Cluster, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``qrmid admin ARGS`` as a separate process on the cluster's address (a narrow terminal)."""
    done = subprocess.run([sys.executable, "-m", "qrmid", "admin", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "QRMID_ADDRESS": cluster.address, "COLUMNS": "40"})
    assert (done.returncode == 0) == ok, done.stderr
    return done


def listing(cluster: Cluster) -> dict[str, Any]:
    return json.loads(qrmid(cluster, "cluster", "--json").stdout)


def dispatcher(listed: dict[str, Any], resource: str = "noop") -> str:
    """The member the listing shows dispatching ``resource`` ('' for none)."""
    members = [m["name"] for m in listed["members"] if resource in m.get("dispatches", [])]
    assert len(members) <= 1, listed
    return members[0] if members else ""


def elected(listed: dict[str, Any], resource: str = "noop") -> tuple[str, int]:
    """The dispatchers' list's member and epoch for ``resource``."""
    (entry,) = [d for d in listed["dispatchers"] if d["resource"] == resource]
    return entry["member"], int(entry["epoch"])


def moved(cluster: Cluster, away_from: str, timeout: float = 10) -> dict[str, Any]:
    """The listing once ``resource`` noop is dispatched by a member other than ``away_from``."""
    deadline = time.monotonic() + timeout
    while True:
        listed = listing(cluster)
        if dispatcher(listed) not in ("", away_from):
            return listed
        assert time.monotonic() < deadline, f"noop still dispatched by {away_from} after {timeout} s: {listed}"
        time.sleep(0.2)


def dispatching(cluster: Cluster, member: str) -> float:
    """``qrmid_resource_dispatching{resource="noop"}`` on ``member``'s metrics endpoint."""
    text = httpx.get(cluster.member(member).metrics, timeout=30).text
    return next(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name == "qrmid_resource_dispatching" and sample.labels == {"resource": "noop"})


def test_members_listed_handed_over_and_back_and_a_killed_one_unhealthy(database: Database, tmp_path: Path) -> None:
    with Cluster(database, NOOP_TOML, members=2, tmp=tmp_path) as cluster:
        listed = listing(cluster)
        assert listed["member"] == "m1", "the first member of the address answers"
        assert [(m["name"], m.get("healthy", False), m.get("handing_over", False)) for m in listed["members"]] == \
            [("m1", True, False), ("m2", True, False)]
        first = dispatcher(listed)
        other = ({"m1", "m2"} - {first}).pop()
        assert first in ("m1", "m2")
        first_epoch = elected(listed)
        assert first_epoch[0] == first
        assert (dispatching(cluster, first), dispatching(cluster, other)) == (1, 0)

        table = qrmid(cluster, "cluster")  # piped: plain aligned text, a row a member
        header, *lines = table.stdout.splitlines()
        assert header.split() == ["MEMBER", "HEALTH", "LAST", "HEARTBEAT", "STARTED", "DISPATCHES"], table.stdout
        rows = [line.split() for line in lines]
        assert [" ".join(row[:-5]) for row in rows] == ["m1 *", "m2"], table.stdout
        assert [(row[-5], row[-4].endswith("s") and row[-3] == "ago", row[-1]) for row in rows] == \
            [("healthy", True, "noop" if first == "m1" else "-"), ("healthy", True, "noop" if first == "m2" else "-")]
        assert table.stderr == "2 member(s); * the member that answered\n"

        handed = qrmid(cluster, "handover", first)
        assert handed.stderr.startswith(f"{first}: hands over its resources"), handed.stderr
        assert f"takes none until it restarts or `qrmid admin handover {first} --back`" in handed.stderr
        listed = moved(cluster, away_from=first)
        assert dispatcher(listed) == other
        member, epoch = elected(listed)
        assert member == other and epoch > first_epoch[1], "each election has a new epoch"
        states = {m["name"]: (m.get("healthy", False), m.get("handing_over", False)) for m in listed["members"]}
        assert states == {first: (True, True), other: (True, False)}
        assert (dispatching(cluster, first), dispatching(cluster, other)) == (0, 1)

        back = qrmid(cluster, "handover", first, "--back")
        assert back.stderr.strip() == f"{first}: takes resources again"
        assert not any(m.get("handing_over", False) for m in listing(cluster)["members"])
        qrmid(cluster, "handover", other)  # the first member takes it again: it was told back
        assert dispatcher(moved(cluster, away_from=other)) == first
        qrmid(cluster, "handover", other, "--back")

        unknown = qrmid(cluster, "handover", "m9", ok=False)
        assert "NOT_FOUND: no member 'm9' ever joined this cluster; its members are: m1, m2" in unknown.stderr

        cluster.kill(other)  # its heartbeat stops: listed, unhealthy, until it starts again
        deadline = time.monotonic() + 60
        while (health := {m["name"]: m.get("healthy", False) for m in listing(cluster)["members"]}) != \
                {first: True, other: False}:
            assert time.monotonic() < deadline, health
            time.sleep(0.5)
        table = qrmid(cluster, "cluster").stdout
        assert any(line.split()[:3] == [other, "no", "heartbeat"] for line in table.splitlines()), table
