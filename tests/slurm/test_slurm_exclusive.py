"""Exclusive leases through Slurm: --qpu=NAME:exclusive jobs on the one-node cluster, against a qrmid of their own
whose resource excl-qpu has two slots (so only an exclusive lease can hold a second task back) and tasks that run
until their job ends. An exclusive job's tasks run while a shared job's wait; a second exclusive job waits in line
at its start and runs once the first ends; a wait that runs out fails the job with the daemon's message and leaves
the node alone; the excl-qpu license keeps the jobs PENDING in Slurm instead, as slurm/README.md pairs them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from daemons import subprocess_daemon

from qrmid.client import Client
from qrmid.client_auth import MUNGE_METADATA, ClientAuth
from qrmid.ops import munge
from qrmid.v1 import admin_pb2, admin_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

if TYPE_CHECKING:  # the fixtures come from conftest.py, which is not imported by name
    from conftest import Cluster

PYTHON = sys.executable
RESOURCE = "excl-qpu"  # its license in slurm.conf: excl-qpu:2
EXCLUSIVE_WAIT = 60  # the site's longest wait (plugstack.conf exclusive_wait)

CONFIG = """
auth = "munge"
socket_mode = "0666"

[auth]
munge_socket = "{munge_socket}"

[leases]
required = true
max_ttl_seconds = 86400

[[resources]]
type = "noop"
name = "excl-qpu"
slots = 2
delay_seconds = 600
min_slots_cap = 1

[[resources]]
type = "noop"
name = "excl-sim"
"""

# A job's task on excl-qpu, started under its lease; its id lands in {out}/{name}.task. It runs until the job ends.
START_TASK = """{python} - > {out}/{name}.tmp <<'PY'
import os
from qrmid.client import Client, pulser_payload
with Client() as qrmid:
    token = os.environ["excl-qpu_QRMI_JOB_ACQUISITION_TOKEN"]
    print(qrmid.start_task("excl-qpu", pulser_payload({{"version": "1"}}, 1), lease_token=token).id)
PY
mv {out}/{name}.tmp {out}/{name}.task
"""


@dataclass
class Site:
    """The cluster with its plugstack pointed at this module's qrmid."""

    cluster: Cluster
    address: str

    def client(self) -> Client:
        return Client(self.address, auth=ClientAuth("munge", str(self.cluster.munge_socket)))

    def leases(self, job_id: str) -> list[pb.Lease]:
        credential = munge.encode(b"", str(self.cluster.munge_socket))
        with grpc.insecure_channel(self.address) as channel:
            answer = admin_pb2_grpc.AdminServiceStub(channel).ListAllLeases(
                admin_pb2.ListAllLeasesRequest(), metadata=[(MUNGE_METADATA, credential)], timeout=30)
        return [lease for lease in answer.leases if lease.slurm_job_id == job_id]

    def job(self, out: Path, name: str, *options: str, task: bool = True, time_limit: int = 5) -> str:
        """A batch job `name` that dumps its environment, starts a task when `task`, then runs until {out}/{name}.go
        exists; its id."""
        start = START_TASK.format(python=PYTHON, out=out, name=name) if task else ""
        return self.cluster.sbatch(f"""
env > {out}/{name}.env
{start}touch {out}/{name}.started
timeout 300 bash -c 'until [ -e {out}/{name}.go ]; do sleep 0.1; done'
""", *options, f"--time={time_limit}")

    def started(self, out: Path, name: str, job_id: str) -> dict[str, str]:
        """Once job `name` runs its script: its environment."""
        self.cluster.wait_for(out / f"{name}.started", job_id, timeout=90)
        text = (out / f"{name}.env").read_text()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def task(self, out: Path, name: str) -> pb.Task:
        with self.client() as client:
            return client.task((out / f"{name}.task").read_text().strip())

    def end(self, out: Path, name: str, job_id: str) -> None:
        (out / f"{name}.go").touch()
        job = self.cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=90)
        assert job.state == "COMPLETED", self.cluster.output(job_id)
        wait_until(lambda: self.leases(job_id) == [], f"job {job_id}'s leases released")


def assert_node_serves(cluster: Cluster) -> None:
    """The node (busy with the other job) is neither drained nor down, and slurmctld hears from it (no `*`)."""
    state = cluster.node_state()
    assert not state.endswith("*") and not any(bad in state for bad in ("drain", "down", "fail")), \
        f"the node is {state}"


def wait_until(check: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def site(cluster: Cluster) -> Iterator[Site]:
    config = CONFIG.format(munge_socket=cluster.munge_socket)
    plugstack = cluster.dir / "etc" / "plugstack.conf"
    usual = plugstack.read_text()
    with subprocess_daemon(config) as (address, _):
        Path(address.removeprefix("unix:")).parent.chmod(0o711)  # jobs of every user reach the socket
        plugstack.write_text(f"required {cluster.plugin} address={address} timeout=20 ttl_margin={cluster.ttl_margin} "
                             f"auth=munge munge_socket={cluster.munge_socket} exclusive_wait={EXCLUSIVE_WAIT}\n")
        try:
            yield Site(cluster, address)
        finally:
            plugstack.write_text(usual)


@pytest.fixture
def out(cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    path = cluster.out / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir()
    return path


def test_an_exclusive_jobs_tasks_run_while_a_shared_jobs_tasks_wait(site: Site, out: Path) -> None:
    exclusive = site.job(out, "exclusive", f"--qpu={RESOURCE}:exclusive")
    env = site.started(out, "exclusive", exclusive)
    assert env["excl-qpu_QRMI_JOB_LEASE_MODE"] == env["QRMI_JOB_QPU_LEASE_MODES"] == "exclusive"
    assert env["QRMI_JOB_QPU_RESOURCES"] == RESOURCE
    assert [(lease.mode, lease.owner) for lease in site.leases(exclusive)] == [(pb.LEASE_MODE_EXCLUSIVE, "root")]
    wait_until(lambda: site.task(out, "exclusive").state == pb.TASK_STATE_RUNNING, "the exclusive job's task running")

    shared = site.job(out, "shared", f"--qpu={RESOURCE}")
    env = site.started(out, "shared", shared)
    assert env["excl-qpu_QRMI_JOB_LEASE_MODE"] == env["QRMI_JOB_QPU_LEASE_MODES"] == "shared"
    assert [lease.mode for lease in site.leases(shared)] == [pb.LEASE_MODE_SHARED], "a shared lease is not held up"
    time.sleep(2)  # dispatch passes with a free slot
    waiting = site.task(out, "shared")
    assert waiting.state == pb.TASK_STATE_QUEUED, "the second slot is free, but the resource is the exclusive job's"
    assert waiting.wait_reason == f"resource {RESOURCE} is held by the exclusive lease of Slurm job {exclusive} " \
                                  "(user root)"
    with site.client() as client:
        assert client.resource(RESOURCE).exclusive_lease.slurm_job_id == exclusive

    site.end(out, "exclusive", exclusive)
    ended = site.task(out, "exclusive")
    assert ended.state == pb.TASK_STATE_CANCELLED
    wait_until(lambda: site.task(out, "shared").state == pb.TASK_STATE_RUNNING, "the shared job's task running")
    assert site.task(out, "shared").start_time.ToNanoseconds() >= ended.end_time.ToNanoseconds()
    site.end(out, "shared", shared)


def test_a_second_exclusive_job_waits_in_line_and_runs_when_the_first_ends(site: Site, out: Path) -> None:
    first = site.job(out, "first", f"--qpu={RESOURCE}:exclusive", task=False)
    site.started(out, "first", first)
    second = site.job(out, "second", f"--qpu={RESOURCE}:exclusive", "--qpu-wait=50", task=False)
    with site.client() as client:
        wait_until(lambda: client.resource(RESOURCE).exclusive_waiting == 1, "the second job in line")
    assert site.cluster.job(second).state == "RUNNING", "Slurm started it; the plugin waits at its start"
    assert site.leases(second) == [] and not (out / "second.started").exists()

    site.end(out, "first", first)
    env = site.started(out, "second", second)
    assert env["excl-qpu_QRMI_JOB_LEASE_MODE"] == "exclusive"
    assert [lease.mode for lease in site.leases(second)] == [pb.LEASE_MODE_EXCLUSIVE]
    site.end(out, "second", second)
    assert "waiting up to 50 s for an exclusive lease on excl-qpu" in \
        (site.cluster.dir / "log" / "slurmd.log").read_text()


def test_a_plain_srun_job_waits_in_line_in_its_step(site: Site, out: Path) -> None:
    holder = site.job(out, "holder", f"--qpu={RESOURCE}:exclusive", task=False)
    site.started(out, "holder", holder)
    srun = subprocess.Popen(["srun", f"--qpu={RESOURCE}:exclusive", "--qpu-wait=50", "--time=3", "printenv",
                             "QRMI_JOB_QPU_LEASE_MODES"], env=site.cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        with site.client() as client:
            wait_until(lambda: client.resource(RESOURCE).exclusive_waiting == 1, "the srun job in line")
        assert srun.poll() is None
        site.end(out, "holder", holder)
        output, _ = srun.communicate(timeout=90)
    finally:
        if srun.poll() is None:
            srun.kill()
            srun.wait()
    assert (srun.returncode, output.splitlines()[-1]) == (0, "exclusive"), output


def test_an_exclusive_wait_that_runs_out_fails_the_job_with_the_daemons_message_not_the_node(
        site: Site, out: Path) -> None:
    holder = site.job(out, "holder", f"--qpu={RESOURCE}:exclusive", task=False)
    site.started(out, "holder", holder)
    late = site.cluster.sbatch(f"touch {out}/late.ran\n", f"--qpu={RESOURCE}:exclusive", "--qpu-wait=3")
    job = site.cluster.wait_job(late, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=90)
    output = site.cluster.output(late)
    assert job.state == "FAILED" and not (out / "late.ran").exists(), output
    assert (f"spank_qrmid: acquiring an exclusive lease on {RESOURCE} at {site.address} failed after waiting up to "
            f"3 s: DEADLINE_EXCEEDED: 1st in line for an exclusive lease on {RESOURCE} after waiting 3 s; the resource "
            f"is held by the exclusive lease of Slurm job {holder} (user root) until ") in output, output
    assert (f"spank_qrmid: --qpu={RESOURCE}:exclusive: cannot lease the quantum resources; the task is "
            "not started") in output, output
    assert_node_serves(site.cluster)
    assert site.leases(late) == []
    site.end(out, "holder", holder)
    assert site.cluster.wait_idle() == "idle"


def test_a_job_cancelled_while_it_waits_leaves_the_line_at_once_and_the_node_answers(site: Site, out: Path) -> None:
    """slurmd cannot signal a step whose start the plugin holds up: the plugin sees the job end in slurmctld and
    cancels its waiting Acquire, instead of keeping the job COMPLETING (and slurmd's answer to slurmctld waiting,
    so that the node is reported not responding) until the wait runs out."""
    holder = site.job(out, "holder", f"--qpu={RESOURCE}:exclusive", task=False)
    site.started(out, "holder", holder)
    waiter = site.job(out, "waiter", f"--qpu={RESOURCE}:exclusive", f"--qpu-wait={EXCLUSIVE_WAIT}", task=False)
    with site.client() as client:
        wait_until(lambda: client.resource(RESOURCE).exclusive_waiting == 1, "the job in line")
        site.cluster.run("scancel", waiter)
        wait_until(lambda: client.resource(RESOURCE).exclusive_waiting == 0, "the job out of line",
                   timeout=EXCLUSIVE_WAIT / 2)
    assert site.cluster.wait_job(waiter, {"CANCELLED", "COMPLETED", "FAILED"}).state == "CANCELLED"
    assert site.cluster.job(holder).state == "RUNNING", "the line was left before any grant"
    log = (site.cluster.dir / "log" / "slurmd.log").read_text()
    assert (f"[{waiter}.batch] error: spank_qrmid: stopped waiting for an exclusive lease on {RESOURCE}: job {waiter} "
            "no longer runs") in log
    assert "DEADLINE_EXCEEDED" not in site.cluster.output(waiter)
    assert site.leases(waiter) == [] and not (out / "waiter.started").exists()
    assert_node_serves(site.cluster)
    site.end(out, "holder", holder)
    assert site.cluster.wait_idle() == "idle"


@pytest.mark.parametrize(("options", "message"), [
    ((f"--qpu={RESOURCE}:exclusiv",),
     (f"spank_qrmid: --qpu: unknown attribute 'exclusiv' of {RESOURCE} (known: shared, exclusive, min_slots=N), "
     f"e.g. --qpu={RESOURCE}:exclusive")),
    ((f"--qpu={RESOURCE}:exclusive", f"--qpu-wait={EXCLUSIVE_WAIT + 1}"),
     (f"spank_qrmid: --qpu-wait={EXCLUSIVE_WAIT + 1}: give whole seconds from 1 to {EXCLUSIVE_WAIT} "
     "(this site's exclusive_wait)")),
    ((f"--qpu={RESOURCE}:shared:min_slots=2",),
     "INVALID_ARGUMENT: min_slots 2 is above what resource 'excl-qpu' allows (at most 1;"),
])
def test_a_bad_mode_wait_or_min_slots_fails_the_job_not_the_node(
        site: Site, out: Path, options: tuple[str, ...], message: str) -> None:
    job_id = site.cluster.sbatch(f"touch {out}/ran\n", *options)
    job = site.cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=90)
    output = site.cluster.output(job_id)
    assert job.state == "FAILED" and not (out / "ran").exists(), output
    assert message in output, output
    assert site.leases(job_id) == []
    assert site.cluster.wait_idle() == "idle"


def test_each_resource_has_its_own_mode_listed_in_the_order_given(site: Site, out: Path) -> None:
    """The exclusive lease is taken first, yet the job's lists keep the order of --qpu."""
    job_id = site.job(out, "mixed", f"--qpu=excl-sim,{RESOURCE}:exclusive", task=False)
    env = site.started(out, "mixed", job_id)
    assert env["QRMI_JOB_QPU_RESOURCES"] == "excl-sim,excl-qpu"
    assert env["QRMI_JOB_QPU_TYPES"] == "noop,noop"
    assert env["QRMI_JOB_QPU_LEASE_MODES"] == "shared,exclusive"
    assert (env["excl-sim_QRMI_JOB_LEASE_MODE"], env["excl-qpu_QRMI_JOB_LEASE_MODE"]) == ("shared", "exclusive")
    held = sorted(site.leases(job_id), key=lambda lease: lease.create_time.ToNanoseconds())
    assert [(lease.resource, lease.mode) for lease in held] == [(RESOURCE, pb.LEASE_MODE_EXCLUSIVE),
                                                                ("excl-sim", pb.LEASE_MODE_SHARED)]
    site.end(out, "mixed", job_id)


def test_min_slots_reach_the_lease(site: Site, out: Path) -> None:
    job_id = site.job(out, "slots", f"--qpu={RESOURCE}:shared:min_slots=1", task=False)
    env = site.started(out, "slots", job_id)
    assert env["excl-qpu_QRMI_JOB_LEASE_MODE"] == "shared"
    assert [(lease.mode, lease.min_slots) for lease in site.leases(job_id)] == [(pb.LEASE_MODE_SHARED, 1)]
    site.end(out, "slots", job_id)


@pytest.mark.parametrize("first_exclusive", [True, False])
def test_the_license_keeps_jobs_pending_in_slurm_while_an_exclusive_job_holds_the_qpu(
        site: Site, out: Path, first_exclusive: bool) -> None:
    """An exclusive job asks for every unit of the license (-L excl-qpu:2), a shared one for one: Slurm, not the
    plugin, holds whichever comes second."""
    exclusive, shared = ("-L", f"{RESOURCE}:2", f"--qpu={RESOURCE}:exclusive"), ("-L", f"{RESOURCE}:1",
                                                                                 f"--qpu={RESOURCE}")
    first_options, second_options = (exclusive, shared) if first_exclusive else (shared, exclusive)
    first = site.job(out, "first", *first_options, task=False)
    site.started(out, "first", first)
    second = site.job(out, "second", *second_options, task=False)
    wait_until(lambda: site.cluster.job(second).reason == "Licenses", "the second job pending for its license", 15)
    time.sleep(2)  # scheduling passes
    assert (site.cluster.job(second).state, site.cluster.job(second).reason) == ("PENDING", "Licenses")
    assert site.leases(second) == []
    with site.client() as client:
        assert client.resource(RESOURCE).exclusive_waiting == 0, "nothing waits in qrmid"

    site.end(out, "first", first)
    env = site.started(out, "second", second)
    assert env["excl-qpu_QRMI_JOB_LEASE_MODE"] == ("shared" if first_exclusive else "exclusive")
    site.end(out, "second", second)
