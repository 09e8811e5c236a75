"""Acquire's Slurm job check against the real one-node cluster: qrmid asks slurmctld (squeue --json) that the
job exists, is running and is the lease owner's, records its account, and answers UNAVAILABLE when
slurmctld does not answer. The qrmid here runs as root without authentication, so every caller is root."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import pytest
from daemons import short_dir, subprocess_daemon

from qrmid.client import Client, pulser_payload

if TYPE_CHECKING:  # the fixtures come from conftest.py, which is not imported by name
    from conftest import Cluster

RUN = pulser_payload({"version": "1"}, 1)


@pytest.fixture(scope="module")
def checked(cluster: Cluster) -> Iterator[Client]:
    """A qrmid that checks the jobs of its leases with the test cluster's slurmctld."""
    text = f"""
[slurm]
check_jobs = true
slurm_conf = "{cluster.env['SLURM_CONF']}"
cache_seconds = 5
timeout_seconds = 3

[[resources]]
type = "noop"
name = "qpu"
"""
    with subprocess_daemon(text) as (address, _), Client(address) as client:
        yield client


def sleeper(cluster: Cluster, *options: str) -> str:
    """A job that sleeps for two minutes, submitted with ``options``; its id."""
    proc = cluster.run("sbatch", "--parsable", "--chdir=/tmp", "--output=/dev/null", "--time=5", *options,
                       "--wrap=sleep 120")
    return proc.stdout.strip().split(";")[0]


def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    return error.value.code(), error.value.details()  # type: ignore[attr-defined]


def test_a_running_job_of_the_caller_gets_a_lease_charged_to_its_account(cluster: Cluster, checked: Client) -> None:
    job = sleeper(cluster, "--account=physics")
    try:
        cluster.wait_job(job, {"RUNNING"})
        lease = checked.acquire("qpu", slurm_job_id=job)
        assert (lease.owner, lease.slurm_job_id) == ("root", job)
        task = checked.start_task("qpu", RUN, lease_token=lease.token)
        assert (task.slurm_job_id, task.account) == (job, "physics")
    finally:
        cluster.run("scancel", job, check=False)


def test_another_users_job_is_refused_unless_acquired_on_their_behalf(cluster: Cluster, checked: Client) -> None:
    job = sleeper(cluster, "--uid=nobody")
    try:
        cluster.wait_job(job, {"RUNNING"})
        code, detail = refused(lambda: checked.acquire("qpu", slurm_job_id=job))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert detail == f"Slurm job {job} belongs to nobody (uid 65534), not to uid 0"
        lease = checked.acquire("qpu", slurm_job_id=job, on_behalf_of="nobody")
        assert (lease.owner, lease.slurm_job_id) == ("nobody", job)
    finally:
        cluster.run("scancel", job, check=False)


def test_finished_and_unknown_jobs_are_refused(cluster: Cluster, checked: Client) -> None:
    job = sleeper(cluster)
    cluster.wait_job(job, {"RUNNING"})
    cluster.run("scancel", job)
    cluster.wait_job(job, {"CANCELLED"})
    assert refused(lambda: checked.acquire("qpu", slurm_job_id=job)) == (
        grpc.StatusCode.PERMISSION_DENIED, f"Slurm job {job} is CANCELLED, not running")
    assert refused(lambda: checked.acquire("qpu", slurm_job_id="987654")) == (
        grpc.StatusCode.PERMISSION_DENIED, "Slurm job 987654 does not exist (or ended long ago)")
    assert all(lease.slurm_job_id != job for lease in checked.list_leases())


def test_a_pending_job_is_accepted_for_an_admin(cluster: Cluster, checked: Client) -> None:
    job = sleeper(cluster, "--begin=now+3600")
    try:
        assert cluster.job(job).state == "PENDING"
        assert checked.acquire("qpu", slurm_job_id=job).slurm_job_id == job  # root is an admin
    finally:
        cluster.run("scancel", job, check=False)


def test_an_unresponsive_slurmctld_makes_checks_unavailable(cluster: Cluster, checked: Client) -> None:
    slurmctld = cluster.daemons["slurmctld"]
    slurmctld.send_signal(signal.SIGSTOP)
    try:
        code, detail = refused(lambda: checked.acquire("qpu", slurm_job_id="987655"))
    finally:
        slurmctld.send_signal(signal.SIGCONT)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert detail == "slurmctld did not answer within 3 s; retry later"
    assert checked.acquire("qpu").resource == "qpu"  # the daemon serves on


def test_one_squeue_snapshot_answers_checks_until_a_job_is_missing(cluster: Cluster) -> None:
    scratch = short_dir()
    calls = scratch / "calls"
    squeue = scratch / "squeue"
    squeue.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec squeue "$@"\n')
    squeue.chmod(0o755)
    text = f"""
[slurm]
check_jobs = true
squeue = "{squeue}"
slurm_conf = "{cluster.env['SLURM_CONF']}"
cache_seconds = 600

[[resources]]
type = "noop"
name = "qpu"
"""
    job = sleeper(cluster)
    try:
        cluster.wait_job(job, {"RUNNING"})
        with subprocess_daemon(text) as (address, _), Client(address) as client:
            for _ in range(3):
                client.acquire("qpu", slurm_job_id=job)
            assert calls.read_text().splitlines() == ["--json"]
            assert refused(lambda: client.acquire("qpu", slurm_job_id="987656"))[0] == grpc.StatusCode.PERMISSION_DENIED
            assert calls.read_text().splitlines() == ["--json", "--json"]  # looked up again before refusing
            client.acquire("qpu", slurm_job_id=job)
            assert len(calls.read_text().splitlines()) == 2
    finally:
        cluster.run("scancel", job, check=False)
