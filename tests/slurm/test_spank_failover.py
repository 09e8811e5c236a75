"""spank_qrmid.so with a cluster address whose first member is down: the plugin's acquire and release and the
job's Python and C clients all reach the member that runs."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from daemons import subprocess_daemon
from lossy_proxy import LosingProxy
from test_spank_qrmid import PYTHON, wait_no_leases

from qrmid.client_auth import MUNGE_METADATA
from qrmid.ops import munge
from qrmid.v1 import admin_pb2, admin_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

if TYPE_CHECKING:  # the fixtures come from conftest.py, which is not imported by name
    from conftest import Cluster


def test_a_job_runs_against_a_cluster_address_with_its_first_member_down(cluster: Cluster) -> None:
    plugstack = cluster.dir / "etc" / "plugstack.conf"
    good = plugstack.read_text()
    address = f"unix:{cluster.dir / 'no-such-member.sock'},{cluster.qrmid_address}"
    plugstack.write_text(good.replace(f"address={cluster.qrmid_address} ", f"address={address} "))
    try:
        out = cluster.out / "failover"
        out.mkdir()
        job_id = cluster.sbatch(f"""
printenv QRMID_ADDRESS > {out}/address
export QRMI_JOB_ACQUISITION_TOKEN="$(printenv local-qiskit_QRMI_JOB_ACQUISITION_TOKEN)"
{PYTHON} -m qrmid run local-qiskit qrmid/examples/bell.json
{cluster.c_example} "$QRMID_ADDRESS"
""", "--qpu=local-qiskit", "--time=5")
        job = cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=180)
    finally:
        plugstack.write_text(good)
    output = cluster.output(job_id)
    assert (job.state, job.fields["ExitCode"]) == ("COMPLETED", "0:0"), output
    assert (out / "address").read_text().strip() == address
    python_task = re.search(r"^task (\S+): completed$", output, re.MULTILINE)
    assert python_task, output
    with cluster.client() as client:
        assert client.task(python_task[1]).slurm_job_id == job_id, "the Python task ran under the job's lease"
    assert "result of task" in output and "released lease" in output, output  # the C example
    wait_no_leases(cluster, job_id)


def test_a_lease_granted_by_a_member_whose_answer_was_lost_is_ended(cluster: Cluster) -> None:
    """The first member (over TCP, through a proxy) grants the lease and its answer is lost; the plugin takes it on
    the next member and ends the lost one: the job holds one lease."""
    port = socket.create_server(("127.0.0.1", 0))
    tcp = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    config = (f'auth = "munge"\nsocket_mode = "0666"\ntcp = "{tcp}"\ntcp_auth = "munge"\n'
              f'[auth]\nmunge_socket = "{cluster.munge_socket}"\n'
              '[[resources]]\ntype = "noop"\nname = "lease-qpu"\nslots = 1\n')
    plugstack = cluster.dir / "etc" / "plugstack.conf"
    good = plugstack.read_text()
    with subprocess_daemon(config) as (daemon, _):
        os.chmod(Path(daemon.removeprefix("unix:")).parent, 0o711)
        proxy = LosingProxy(int(tcp.rsplit(":", 1)[1]), nth=4)  # health, GetResource, ListAllLeases, Acquire
        out = cluster.out / "lost-answer"
        out.mkdir()
        plugstack.write_text(good.replace(f"address={cluster.qrmid_address} ", f"address={proxy.address},{daemon} "))
        try:
            job_id = cluster.sbatch(f"""
printenv lease-qpu_QRMI_JOB_ACQUISITION_TOKEN > {out}/token
timeout 60 bash -c 'until [ -e {out}/go ]; do sleep 0.1; done'
""", "--qpu=lease-qpu", "--time=5")
            cluster.wait_for(out / "token", job_id)
            assert proxy.lost.is_set(), "the first member's answer to Acquire was lost"
            held = job_leases(daemon, cluster.munge_socket, job_id)
            assert len(held) == 1, f"the lost lease was not ended: {held}"
            (out / "go").touch()
            job = cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=120)
        finally:
            plugstack.write_text(good)
            proxy.close()
        assert job.state == "COMPLETED", cluster.output(job_id)
        log = (cluster.dir / "log" / "slurmd.log").read_text(errors="replace")
        assert f"for job {job_id}: granted to an attempt whose answer was lost" in log
        assert job_leases(daemon, cluster.munge_socket, job_id) == []


def job_leases(address: str, munge_socket: Path, job_id: str) -> list[pb.Lease]:
    """Every user's live leases of Slurm job ``job_id`` at ``address``, as AdminService.ListAllLeases shows them."""
    credential = munge.encode(b"", str(munge_socket))
    with grpc.insecure_channel(address) as channel:
        answer = admin_pb2_grpc.AdminServiceStub(channel).ListAllLeases(
            admin_pb2.ListAllLeasesRequest(), metadata=[(MUNGE_METADATA, credential)], timeout=30)
    return [lease for lease in answer.leases if lease.slurm_job_id == job_id]
