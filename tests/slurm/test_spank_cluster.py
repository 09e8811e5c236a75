"""spank_qrmid.so against a cluster of three qrmid members on one PostgreSQL database, the plugin's ``address=`` and the
job's ``QRMID_ADDRESS`` naming every member (Unix sockets and TCP listeners, all with MUNGE). The member dispatching
the job's resource is killed (SIGKILL) before the job, or once the job holds a lease that member granted; or the first
member of the address hangs (SIGSTOP). The job's Python client runs its task to COMPLETED through the cluster address,
the task dispatched by the member elected after the kill, and the lease ends with the job on every other member."""

from __future__ import annotations

import os
import re
import signal
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import tomli_w
from cluster import Cluster as Members
from cluster import Member
from postgres import Database
from test_spank_failover import job_leases
from test_spank_qrmid import PYTHON

from qrmid.client import Client
from qrmid.client_auth import ClientAuth
from qrmid.store.members import DISPATCHERS
from qrmid.v1 import quantum_resources_pb2 as pb

if TYPE_CHECKING:  # the fixtures come from conftest.py, which is not imported by name
    from conftest import Cluster, Job

RESOURCE = "cluster-qpu"

# Leases are required, as on a Slurm node: the job's task runs only under the plugin's lease.
MEMBERS_TOML = f"""
[leases]
required = true
max_ttl_seconds = 86400

[[resources]]
type = "noop"
name = "{RESOURCE}"
slots = 1
delay_seconds = 1
"""


def members_with_munge(database: Database, munge_socket: Path) -> Members:
    """Three members (not started) that authenticate the callers on their Unix sockets and TCP listeners with the Slurm
    cluster's MUNGE and let every user reach them, as the Slurm tests' daemon does (the harness' members trust their
    socket's owner and take tokens over TCP)."""
    members = Members(database, MEMBERS_TOML, members=3)
    for name in members.names:
        path = members.member(name).config
        doc = tomllib.loads(path.read_text())
        doc["daemon"] |= {"auth": "munge", "socket_mode": "0666", "tcp_auth": "munge"}
        doc["auth"]["munge_socket"] = str(munge_socket)
        path.write_text(tomli_w.dumps(doc))
    return members


def dispatcher(database: Database, timeout: float = 30) -> tuple[str, int, float]:
    """The member dispatching ``RESOURCE`` (recorded in ``resource_epoch`` and holding its advisory lock), its epoch
    and since when (seconds since the epoch), once there is one."""
    deadline = time.monotonic() + timeout
    with database.connect() as conn:
        while True:
            rows = [row for row in conn.execute(DISPATCHERS).fetchall() if row[0] == RESOURCE]
            if rows:
                _, member, epoch, since = rows[0]
                return member, epoch, float(since)
            assert time.monotonic() < deadline, f"no member dispatches {RESOURCE} after {timeout} s"
            time.sleep(0.1)


def run_job(cluster: Cluster, address: str, name: str, meanwhile: Callable[[str], None]) -> tuple[Job, str]:
    """A batch job with ``--qpu=RESOURCE`` whose plugin and client use ``address``; ``meanwhile(job_id)`` runs once
    the job holds its lease, before its client runs a task. Returns the job, ended, and its output."""
    out = cluster.out / name
    out.mkdir()
    plugstack = cluster.dir / "etc" / "plugstack.conf"
    good = plugstack.read_text()
    plugstack.write_text(good.replace(f"address={cluster.qrmid_address} ", f"address={address} "))
    try:
        job_id = cluster.sbatch(f"""
printenv QRMID_ADDRESS > {out}/address
printenv {RESOURCE}_QRMI_JOB_ACQUISITION_TOKEN > {out}/token
timeout 60 bash -c 'until [ -e {out}/go ]; do sleep 0.1; done'
export QRMI_JOB_ACQUISITION_TOKEN="$(printenv {RESOURCE}_QRMI_JOB_ACQUISITION_TOKEN)"
{PYTHON} -m qrmid run {RESOURCE} qrmid/examples/bell.json
""", f"--qpu={RESOURCE}", "--time=5")
        cluster.wait_for(out / "token", job_id)
        meanwhile(job_id)
        (out / "go").touch()
        job = cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=180)
    finally:
        plugstack.write_text(good)
    output = cluster.output(job_id)
    assert (job.state, job.fields["ExitCode"]) == ("COMPLETED", "0:0"), output
    assert (out / "address").read_text().strip() == address
    assert (out / "token").read_text().strip(), "the job got its lease token"
    return job, output


def leases_of(cluster: Cluster, job_id: str, members: list[Member]) -> dict[str, list[tuple[str, str, str]]]:
    """The job's leases (id, resource, owner) that each of ``members`` lists with AdminService.ListAllLeases."""
    return {member.name: [(lease.id, lease.resource, lease.owner)
                          for lease in job_leases(member.address, cluster.munge_socket, job_id)]
            for member in members}


def check_ran_and_released(cluster: Cluster, database: Database, job: Job, output: str, survivors: list[Member],
                           elected: int) -> None:
    """The job's task completed under the job on every survivor, dispatched by a survivor elected at epoch ``elected``
    or later, and the job's lease is gone from every survivor."""
    ran = re.search(r"^task (\S+): completed$", output, re.MULTILINE)
    assert ran, output
    for member in survivors:
        with Client(member.address, auth=ClientAuth("munge", str(cluster.munge_socket))) as client:
            task = client.task(ran[1])
        assert (task.state, task.slurm_job_id) == (pb.TASK_STATE_COMPLETED, job.id), member.name

    successor, epoch, since = dispatcher(database)
    assert successor in {member.name for member in survivors} and epoch >= elected
    with database.connect() as conn:
        (started_at,), = conn.execute("SELECT started_at FROM tasks WHERE id = %s", (ran[1],)).fetchall()
    assert started_at >= since, f"the task started at {started_at}, before {successor} took over at {since}"

    deadline = time.monotonic() + 30
    while left := {name: held for name, held in leases_of(cluster, job.id, survivors).items() if held}:
        assert time.monotonic() < deadline, f"the job's lease outlived it on {left}"
        time.sleep(0.2)


def test_a_job_runs_through_the_survivors_of_a_cluster_whose_dispatcher_was_killed_before_it(
        cluster: Cluster, database: Database) -> None:
    with members_with_munge(database, cluster.munge_socket) as members:
        killed, killed_epoch, _ = dispatcher(database)
        members.kill(killed)
        survivors = [members.member(name) for name in members.names if name != killed]
        # the killed member first: every client meets its stale socket before the survivors' TCP listeners
        address = ",".join([members.member(killed).address, *(member.tcp for member in survivors)])
        held: dict[str, list[tuple[str, str, str]]] = {}
        job, output = run_job(cluster, address, "cluster-killed-before",
                              lambda job_id: held.update(leases_of(cluster, job_id, survivors)))
        (lease_id, _, _), = held[survivors[0].name]
        assert held == {member.name: [(lease_id, RESOURCE, "root")] for member in survivors}, \
            "every surviving member lists the job's one lease"
        check_ran_and_released(cluster, database, job, output, survivors, killed_epoch + 1)


def test_a_job_whose_lease_was_granted_by_the_dispatcher_killed_during_it_runs_and_releases_through_the_survivors(
        cluster: Cluster, database: Database) -> None:
    with members_with_munge(database, cluster.munge_socket) as members:
        killed, killed_epoch, _ = dispatcher(database)
        survivors = [members.member(name) for name in members.names if name != killed]
        # the killed member first, over TCP: once it is gone, its port refuses every client
        address = ",".join([members.member(killed).tcp, *(member.address for member in survivors)])
        held: dict[str, list[tuple[str, str, str]]] = {}

        def kill_the_granting_dispatcher(job_id: str) -> None:
            held.update(leases_of(cluster, job_id, [members.member(killed), *survivors]))
            members.kill(killed)

        job, output = run_job(cluster, address, "cluster-killed-during", kill_the_granting_dispatcher)
        (lease_id, _, _), = held[killed]
        assert held == {name: [(lease_id, RESOURCE, "root")] for name in members.names}, \
            "every member lists the job's one lease"
        assert f"lease {lease_id} granted on {RESOURCE}" in members.member(killed).log.read_text(), \
            "the killed member, first in the address, granted the lease"
        check_ran_and_released(cluster, database, job, output, survivors, killed_epoch + 1)


def test_a_job_runs_through_the_others_when_the_first_member_of_its_address_hangs(
        cluster: Cluster, database: Database) -> None:
    """A stopped member (SIGSTOP: its socket and port take connections, it never answers, as a host gone from the
    network) first in the address: each client gives it a few seconds to connect and moves on, within the plugin's
    timeout=20."""
    with members_with_munge(database, cluster.munge_socket) as members:
        leader, epoch, _ = dispatcher(database)
        hung = next(members.member(name) for name in members.names if name != leader)
        others = [members.member(name) for name in members.names if name != hung.name]
        address = ",".join([hung.tcp, *(member.address for member in others)])
        os.kill(hung.process.pid, signal.SIGSTOP)
        try:
            held: dict[str, list[tuple[str, str, str]]] = {}
            job, output = run_job(cluster, address, "cluster-hung",
                                  lambda job_id: held.update(leases_of(cluster, job_id, others)))
            (lease_id, _, _), = held[others[0].name]
            assert held == {member.name: [(lease_id, RESOURCE, "root")] for member in others}
            check_ran_and_released(cluster, database, job, output, others, epoch)
        finally:
            os.kill(hung.process.pid, signal.SIGCONT)
