"""Allocations of Slurm accounts against the real one-node cluster: a task under the lease of a job submitted with
``--account`` is charged to that account, refused past its hard allocation, and ``ListMyAllocations`` shows the
caller the allocations of their leases' accounts beside their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import pytest
from daemons import subprocess_daemon
from test_slurm_jobs import sleeper

from qrmid.client import Client, pulser_payload
from qrmid.v1 import admin_pb2, admin_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

if TYPE_CHECKING:  # the fixtures come from conftest.py, which is not imported by name
    from conftest import Cluster


@pytest.fixture(scope="module")
def checked(cluster: Cluster) -> Iterator[tuple[str, Client]]:
    """A qrmid that checks the jobs of its leases (and so learns their accounts) with the test cluster's slurmctld."""
    text = f"""
[slurm]
check_jobs = true
slurm_conf = "{cluster.env['SLURM_CONF']}"

[[resources]]
type = "noop"
name = "qpu"
"""
    with subprocess_daemon(text) as (address, _), Client(address) as client:
        yield address, client


def test_a_jobs_account_is_charged_and_held_to_its_allocation(cluster: Cluster, checked: tuple[str, Client]) -> None:
    address, client = checked
    with grpc.insecure_channel(address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        for account, count in (("physics", 10), ("root", 1000)):
            admin.SetAllocation(admin_pb2.SetAllocationRequest(allocation=pb.Allocation(
                account=account, shots=count, period="day")))
    job = sleeper(cluster, "--account=physics")
    try:
        cluster.wait_job(job, {"RUNNING"})
        lease = client.acquire("qpu", slurm_job_id=job)
        done = client.wait(client.start_task("qpu", pulser_payload({"version": "1"}, 8), lease_token=lease.token).id)
        assert (done.account, done.state) == ("physics", pb.TASK_STATE_COMPLETED)
        with pytest.raises(grpc.RpcError) as refused:
            client.start_task("qpu", pulser_payload({"version": "1"}, 3), lease_token=lease.token)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the hard allocation of account 'physics' on every resource (10 shots a day) has 2 shots left (8 " \
               "used) and the task asks for 3" in (refused.value.details() or "")
        own = client.wait(client.start_task("qpu", pulser_payload({"version": "1"}, 3)).id)
        assert (own.account, own.state) == ("root", pb.TASK_STATE_COMPLETED), "root's own allocation has room"
        assert [(a.account, a.used_shots) for a in client.my_allocations()] == [("physics", 8), ("root", 3)]
    finally:
        cluster.run("scancel", job, check=False)
