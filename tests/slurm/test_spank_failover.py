"""spank_qrmid.so with a cluster address whose first member is down: the plugin's acquire and release and the
job's Python and C clients all reach the member that runs."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from daemons import subprocess_daemon
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


class LosingProxy:
    """A TCP proxy to a daemon that loses one answer: it forwards both ways, and at the ``nth`` response the
    daemon starts (an HTTP/2 HEADERS frame without END_STREAM) it closes the connection instead of passing it on,
    so the call was made but its caller never hears of it."""

    def __init__(self, upstream: int, nth: int) -> None:
        self.upstream, self.nth, self.seen = upstream, nth, 0
        self.lost = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._responses, args=(server, client), daemon=True).start()

    @staticmethod
    def _requests(client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        hang_up(client, server)

    def _responses(self, server: socket.socket, client: socket.socket) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                pending += data
                while len(pending) >= 9 and len(pending) >= 9 + int.from_bytes(pending[:3], "big"):
                    size = 9 + int.from_bytes(pending[:3], "big")
                    frame, pending = pending[:size], pending[size:]
                    if frame[3] == 1 and not frame[4] & 1 and not self.lost.is_set():  # a response starts
                        self.seen += 1
                        if self.seen == self.nth:
                            self.lost.set()
                            raise OSError("the answer is lost")
                    client.sendall(frame)
        hang_up(client, server)


def hang_up(*ends: socket.socket) -> None:
    """Ends both directions of each connection at once (a thread blocked reading one wakes up), then closes it."""
    for end in ends:
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()


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
