"""Jobs of ordinary users on the MUNGE-authenticated qrmid: the plugin leases on behalf of the job's user,
the job's clients prove who they are with the exported QRMID_AUTH=munge, and users cannot see each other's
tasks.

The job scripts run Debian's python3 (same minor version as the test's) on a copy of the project's package and the
test environment's packages, in a fresh directory every user may enter: the test's own interpreter, the checkout and
its environment may all sit under directories only their owner may enter."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from daemons import ROOT

from qrmid.v1 import quantum_resources_pb2 as pb

if TYPE_CHECKING:  # the fixtures come from conftest.py, which is not imported by name
    from conftest import Cluster

ALICE, BOB = "qrmid-alice", "qrmid-bob"
SYSTEM_PYTHON = "/usr/bin/python3"

# Alice's job: a Bell task on local-qiskit under her lease, with the CLI, then a task that holds slow-qpu.
ALICE_SLOW_TASK = """
import os
from qrmid.client import Client, pulser_payload
with Client() as qrmid:
    token = os.environ["slow-qpu_QRMI_JOB_ACQUISITION_TOKEN"]
    print(qrmid.start_task("slow-qpu", pulser_payload({"version": "1"}, 1), lease_token=token).id)
"""

# Bob's job: asks for each of the task ids in argv, and for the leases of the Slurm job in argv[1].
BOB_PROBE = """
import sys
import grpc
from qrmid.client import Client
with Client() as qrmid:
    print("leases", len(qrmid.list_leases(slurm_job_id=sys.argv[1])))
    for task_id in sys.argv[2:]:
        try:
            print("task", task_id, qrmid.task(task_id).owner)
        except grpc.RpcError as error:
            print("task", task_id, error.code().name, error.details())
"""


def readable_copy(source: str, destination: str) -> None:
    """``source`` at ``destination``, readable by every user: a hard link when it already is and both are on one file
    system, else a copy with read permission for all."""
    mode = os.stat(source).st_mode
    if mode & 0o004:
        try:
            os.link(source, destination)
            return
        except OSError:  # another file system
            pass
    shutil.copy2(source, destination)
    os.chmod(destination, mode | 0o444 | (0o111 if mode & 0o100 else 0))


@pytest.fixture(scope="module")
def job_tree() -> Iterator[Path]:
    """A fresh directory every user may enter and read, holding what the jobs run: ``qrmid`` (the project's package,
    with its examples) and ``site-packages`` (the test environment's packages)."""
    tree = Path(tempfile.mkdtemp(prefix="qj"))
    try:
        shutil.copytree(ROOT / "qrmid", tree / "qrmid", copy_function=readable_copy)
        shutil.copytree(sysconfig.get_paths()["purelib"], tree / "site-packages", copy_function=readable_copy)
        for directory, _, _ in os.walk(tree):
            os.chmod(directory, os.stat(directory).st_mode | 0o555)
        yield tree
    finally:
        shutil.rmtree(tree, ignore_errors=True)


@pytest.fixture(scope="module")
def job_python(job_tree: Path) -> str:
    """A command line running the copied qrmid with a Python every user may execute."""
    if shutil.which(SYSTEM_PYTHON) is None:
        pytest.fail(f"missing {SYSTEM_PYTHON}; install with: apt-get install python3")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.fail(f"{SYSTEM_PYTHON} is Python {version}, the tests run {sys.version_info[:2]}: the jobs of other "
                    "users need the same minor version to load this environment's compiled packages")
    return f"PYTHONPATH={job_tree}:{job_tree / 'site-packages'} {SYSTEM_PYTHON}"


def user_dir(cluster: Cluster, name: str, user: str) -> Path:
    """A fresh directory under the jobs' output that only ``user`` (and root) may write."""
    path = cluster.out / name
    path.mkdir()
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_users_job_runs_tasks_as_that_user_hidden_from_others_until_scancel(
        cluster: Cluster, users: tuple[str, ...], job_tree: Path, job_python: str) -> None:
    alice_out = user_dir(cluster, "alice", ALICE)
    alice_id = cluster.sbatch(f"""
env > {alice_out}/job.env
id -un > {alice_out}/user
export QRMI_JOB_ACQUISITION_TOKEN="$(printenv local-qiskit_QRMI_JOB_ACQUISITION_TOKEN)"
{job_python} -m qrmid run local-qiskit qrmid/examples/bell.json > {alice_out}/bell.tmp 2>&1
mv {alice_out}/bell.tmp {alice_out}/bell
{job_python} - > {alice_out}/slow.tmp <<'PY'
{ALICE_SLOW_TASK}
PY
mv {alice_out}/slow.tmp {alice_out}/slow
sleep 300
""", f"--uid={ALICE}", "--qpu=local-qiskit,slow-qpu", "--time=10", chdir=job_tree)
    cluster.wait_for(alice_out / "slow", alice_id, timeout=120)
    alice_uid = pwd.getpwnam(ALICE).pw_uid

    env_text = (alice_out / "job.env").read_text()
    assert cluster.vendor_secret not in env_text, "a vendor secret from the daemon's config reached the job"
    env = parse_env(env_text)
    assert (alice_out / "user").read_text().strip() == ALICE
    assert (env["QRMI_JOB_UID"], env["QRMI_JOB_ID"]) == (str(alice_uid), alice_id)
    assert (env["QRMID_AUTH"], env["QRMID_MUNGE_SOCKET"]) == ("munge", str(cluster.munge_socket))
    bell_output = (alice_out / "bell").read_text()
    assert '"00"' in bell_output and '"11"' in bell_output, bell_output
    bell_task = re.search(r"^task (\S+): completed$", bell_output, re.MULTILINE)
    assert bell_task, bell_output
    bell_id = bell_task[1]
    slow_id = (alice_out / "slow").read_text().strip()

    with cluster.client() as admin:
        held = cluster.leases(alice_id)
        assert sorted((lease.resource, lease.owner) for lease in held) == [
            ("local-qiskit", ALICE), ("slow-qpu", ALICE)], "the plugin acquired on behalf of the job's user"
        lease_ids = {lease.resource: lease.id for lease in held}
        bell = admin.task(bell_id)
        assert (bell.state, bell.owner, bell.slurm_job_id, bell.lease_id) == (
            pb.TASK_STATE_COMPLETED, ALICE, alice_id, lease_ids["local-qiskit"])
        slow = admin.task(slow_id)
        assert (slow.owner, slow.slurm_job_id, slow.lease_id) == (ALICE, alice_id, lease_ids["slow-qpu"])
        assert slow.state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING)

        bob_out = user_dir(cluster, "bob", BOB)
        bob_id = cluster.sbatch(f"""
{job_python} - {alice_id} {bell_id} {slow_id} > {bob_out}/probe <<'PY'
{BOB_PROBE}
PY
""", f"--uid={BOB}", "--qpu=local-qiskit", "--time=5", chdir=job_tree)
        bob = cluster.wait_job(bob_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120)
        assert (bob.state, bob.fields["ExitCode"]) == ("COMPLETED", "0:0"), cluster.output(bob_id)
        probe = (bob_out / "probe").read_text().splitlines()
        assert probe[0] == "leases 0", "bob sees none of alice's leases"
        for task_id, line in zip((bell_id, slow_id), probe[1:], strict=True):
            assert line.startswith(f"task {task_id} PERMISSION_DENIED "), probe
        assert cluster.leases(bob_id) == [], "bob's job released its lease"

        cluster.run("scancel", alice_id)
        job = cluster.wait_job(alice_id, {"CANCELLED", "COMPLETED", "FAILED"}, timeout=60)
        assert job.state == "CANCELLED"
        deadline = time.monotonic() + 30
        while (still := cluster.leases(alice_id)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert still == [], "scancel released alice's leases"
        slow = admin.task(slow_id)
        assert (slow.state, slow.reason) == (
            pb.TASK_STATE_CANCELLED, "its lease was released: its Slurm job step ended")
    output = cluster.output(alice_id)
    assert cluster.vendor_secret not in output
    assert cluster.wait_idle() == "idle"
