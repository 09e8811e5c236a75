"""spank_qrmid.so on a real Slurm: jobs lease qrmid resources, run Python and C clients under the lease, and
release it at the end, on scancel and on failure; errors fail the job, never the node."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from daemons import ROOT

from qrmid.v1 import quantum_resources_pb2 as pb

if TYPE_CHECKING:  # the fixtures come from conftest.py, which is not imported by name
    from conftest import Cluster

PYTHON = sys.executable

# Every variable the plugin exports for a job with --qpu=local-qiskit; nothing else may mention QRMI or a
# QPU list, or start with the resource's name (Slurm's own copy of the option, SLURM_SPANK__..., aside).
EXPECTED_VARIABLES = {
    "QRMI_JOB_QPU_RESOURCES", "QRMI_JOB_QPU_TYPES", "QRMI_JOB_QPU_LEASE_MODES", "SLURM_JOB_QPU_RESOURCES",
    "SLURM_JOB_QPU_TYPES", "local-qiskit_QRMI_JOB_ACQUISITION_TOKEN", "local-qiskit_QRMI_JOB_TIMEOUT_SECONDS",
    "local-qiskit_QRMI_JOB_LEASE_MODE",
    "QRMI_JOB_ID", "QRMI_JOB_UID", "QRMID_ADDRESS", "QRMID_AUTH", "QRMID_MUNGE_SOCKET",
}


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def leases(cluster: Cluster, job_id: str) -> list[pb.Lease]:
    return cluster.leases(job_id)


def wait_no_leases(cluster: Cluster, job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (held := leases(cluster, job_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held == [], f"job {job_id} still holds {held}"


def test_batch_job_runs_python_and_c_clients_under_its_lease(cluster: Cluster) -> None:
    out = cluster.out / "batch"
    out.mkdir()
    job_id = cluster.sbatch(f"""
env > {out}/batch.env
srun --ntasks=1 printenv local-qiskit_QRMI_JOB_ACQUISITION_TOKEN > {out}/step.token
touch {out}/started
timeout 60 bash -c 'until [ -e {out}/go ]; do sleep 0.1; done'
export QRMI_JOB_ACQUISITION_TOKEN="$(printenv local-qiskit_QRMI_JOB_ACQUISITION_TOKEN)"
{PYTHON} -m qrmid run local-qiskit qrmid/examples/bell.json
{cluster.c_example} "$QRMID_ADDRESS"
""", "--qpu=local-qiskit", "--time=5")
    cluster.wait_for(out / "started", job_id)

    env_text = (out / "batch.env").read_text()
    assert cluster.vendor_secret not in env_text, "a vendor secret from the daemon's config reached the job"
    env = parse_env(env_text)
    mentioned = {name for name in env if ("QRMI" in name or "_QPU_" in name or name.startswith("local-qiskit"))
                 and not name.startswith("SLURM_SPANK_")}
    assert mentioned == EXPECTED_VARIABLES
    assert env["QRMI_JOB_QPU_RESOURCES"] == env["SLURM_JOB_QPU_RESOURCES"] == "local-qiskit"
    assert env["QRMI_JOB_QPU_TYPES"] == env["SLURM_JOB_QPU_TYPES"] == "local-qiskit"
    assert env["QRMI_JOB_QPU_LEASE_MODES"] == env["local-qiskit_QRMI_JOB_LEASE_MODE"] == "shared"
    assert (env["QRMI_JOB_ID"], env["QRMI_JOB_UID"]) == (job_id, "0")
    assert env["QRMID_ADDRESS"] == cluster.qrmid_address
    assert (env["QRMID_AUTH"], env["QRMID_MUNGE_SOCKET"]) == ("munge", str(cluster.munge_socket))
    assert env["local-qiskit_QRMI_JOB_TIMEOUT_SECONDS"] == "300"
    token = env["local-qiskit_QRMI_JOB_ACQUISITION_TOKEN"]
    assert len(token) >= 32
    assert (out / "step.token").read_text().strip() == token, "a step of a batch job uses the batch step's lease"

    held = leases(cluster, job_id)
    assert [(lease.resource, lease.slurm_job_id, lease.token) for lease in held] == [("local-qiskit", job_id, "")], \
        "one lease, still held after the inner srun step ended"
    assert held[0].owner == "root", "the plugin acquired on behalf of the job's user (uid 0 here)"
    assert held[0].expire_time.seconds - held[0].create_time.seconds == 5 * 60 + cluster.ttl_margin

    (out / "go").touch()
    job = cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=120)
    output = cluster.output(job_id)
    assert (job.state, job.fields["ExitCode"]) == ("COMPLETED", "0:0"), output
    assert cluster.vendor_secret not in output
    assert '"00"' in output and '"11"' in output, output
    python_task = re.search(r"^task (\S+): completed$", output, re.MULTILINE)
    assert python_task, output
    with cluster.client() as client:
        assert client.task(python_task[1]).slurm_job_id == job_id, "the Python task ran under the job's lease"
    assert "result of task" in output and "released lease" in output, output  # the C example
    wait_no_leases(cluster, job_id)


def test_plain_srun_job_leases_in_its_step_and_honours_the_list_delimiter(cluster: Cluster) -> None:
    out = cluster.out / "srun"
    out.mkdir()
    script = f"""set -eu
env > {out}/srun.env
touch {out}/started
timeout 60 bash -c 'until [ -e {out}/go ]; do sleep 0.1; done'
export QRMI_JOB_ACQUISITION_TOKEN="$(printenv local-qiskit_QRMI_JOB_ACQUISITION_TOKEN)"
{PYTHON} -m qrmid run local-qiskit qrmid/examples/bell.json
"""
    srun = subprocess.Popen(["srun", "--qpu=local-qiskit,slow-qpu", "--time=2", "bash", "-c", script],
                            env={**cluster.env, "QRMI_LIST_DELIMITER": ";"}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "started").exists():
            assert srun.poll() is None, f"srun ended early ({srun.returncode}):\n{srun.communicate()[0]}"
            assert time.monotonic() < deadline, "the srun step did not start within 60 s"
            time.sleep(0.1)
        env = parse_env((out / "srun.env").read_text())
        job_id = env["QRMI_JOB_ID"]
        assert env["QRMI_JOB_QPU_RESOURCES"] == env["SLURM_JOB_QPU_RESOURCES"] == "local-qiskit;slow-qpu"
        assert env["QRMI_JOB_QPU_TYPES"] == env["SLURM_JOB_QPU_TYPES"] == "local-qiskit;noop"
        assert env["local-qiskit_QRMI_JOB_TIMEOUT_SECONDS"] == env["slow-qpu_QRMI_JOB_TIMEOUT_SECONDS"] == "120"
        assert env["local-qiskit_QRMI_JOB_ACQUISITION_TOKEN"] != env["slow-qpu_QRMI_JOB_ACQUISITION_TOKEN"]
        held = leases(cluster, job_id)
        assert sorted(lease.resource for lease in held) == ["local-qiskit", "slow-qpu"]
        lifetimes = {lease.expire_time.seconds - lease.create_time.seconds for lease in held}
        assert lifetimes == {2 * 60 + cluster.ttl_margin}
        (out / "go").touch()
        output, _ = srun.communicate(timeout=120)
    finally:
        if srun.poll() is None:
            srun.kill()
            srun.wait()
    assert srun.returncode == 0, output
    assert '"00"' in output and '"11"' in output, output
    wait_no_leases(cluster, job_id)


def test_scancel_releases_the_lease_and_cancels_its_tasks(cluster: Cluster) -> None:
    out = cluster.out / "scancel"
    out.mkdir()
    job_id = cluster.sbatch(f"""
{PYTHON} - > {out}/task.tmp <<'PY'
import os
from qrmid.client import Client, pulser_payload
with Client() as qrmid:
    token = os.environ["slow-qpu_QRMI_JOB_ACQUISITION_TOKEN"]
    print(qrmid.start_task("slow-qpu", pulser_payload({{"version": "1"}}, 1), lease_token=token).id)
PY
mv {out}/task.tmp {out}/task
sleep 300
""", "--qpu=slow-qpu", "--time=10")
    cluster.wait_for(out / "task", job_id)
    task_id = (out / "task").read_text().strip()
    with cluster.client() as client:
        deadline = time.monotonic() + 30
        while client.task(task_id).state != pb.TASK_STATE_RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
        task = client.task(task_id)
        assert (task.state, task.slurm_job_id) == (pb.TASK_STATE_RUNNING, job_id)
        assert [lease.id for lease in client.list_leases(slurm_job_id=job_id)] == [task.lease_id]

        cluster.run("scancel", job_id)
        job = cluster.wait_job(job_id, {"CANCELLED", "COMPLETED", "FAILED"}, timeout=60)
        assert job.state == "CANCELLED"
        wait_no_leases(cluster, job_id)
        task = client.task(task_id)
        assert (task.state, task.reason) == (pb.TASK_STATE_CANCELLED, "its lease was released: its Slurm job step ended")
    assert cluster.wait_idle() == "idle"


@pytest.mark.parametrize("qpu", ["nope", "local-qiskit,nope"])
def test_an_unknown_resource_fails_the_job_not_the_node(cluster: Cluster, qpu: str) -> None:
    job_id = cluster.sbatch("echo the job script ran\n", f"--qpu={qpu}")
    job = cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED"})
    output = cluster.output(job_id)
    assert job.state == "FAILED", output
    assert "the job script ran" not in output
    assert (f"spank_qrmid: looking up resource nope at {cluster.qrmid_address} failed: NOT_FOUND: "
            "no resource named 'nope' (known: local-qiskit, slow-qpu, vendor-qpu)") in output
    assert f"spank_qrmid: --qpu={qpu}: cannot lease the quantum resources; the task is not started" in output
    wait_no_leases(cluster, job_id)  # with two names, the one that was leased is released
    assert cluster.wait_idle() == "idle", "a failed lease never drains the node"


def test_an_unreachable_daemon_fails_the_job_with_the_status(cluster: Cluster) -> None:
    plugstack = cluster.dir / "etc" / "plugstack.conf"
    good = plugstack.read_text()
    missing = cluster.dir / "no-such-qrmid.sock"
    plugstack.write_text(f"required {cluster.plugin} address=unix:{missing} timeout=5\n")
    try:
        job_id = cluster.sbatch("echo the job script ran\n", "--qpu=local-qiskit")
        job = cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED"})
    finally:
        plugstack.write_text(good)
    output = cluster.output(job_id)
    assert job.state == "FAILED" and "the job script ran" not in output, output
    assert f"spank_qrmid: looking up resource local-qiskit at unix:{missing} failed: UNAVAILABLE: " in output, output
    assert cluster.wait_idle() == "idle"


def test_a_qpu_license_queues_the_second_job_until_the_first_ends(cluster: Cluster) -> None:
    out = cluster.out / "licenses"
    out.mkdir()
    first = cluster.sbatch(f"""
touch {out}/first-started
timeout 60 bash -c 'until [ -e {out}/go ]; do sleep 0.1; done'
""", "-L", "local-qiskit", "--qpu=local-qiskit")
    cluster.wait_for(out / "first-started", first)
    second = cluster.sbatch(f"touch {out}/second-ran\n", "-L", "local-qiskit", "--qpu=local-qiskit")
    deadline = time.monotonic() + 15
    while (job := cluster.job(second)).reason != "Licenses" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (job.state, job.reason) == ("PENDING", "Licenses")
    assert len(leases(cluster, first)) == 1 and leases(cluster, second) == []
    time.sleep(2)
    assert cluster.job(second).state == "PENDING" and not (out / "second-ran").exists()

    (out / "go").touch()
    assert cluster.wait_job(first, {"COMPLETED", "FAILED"}).state == "COMPLETED"
    assert cluster.wait_job(second, {"COMPLETED", "FAILED"}, timeout=60).state == "COMPLETED"
    assert (out / "second-ran").exists()
    wait_no_leases(cluster, first)
    wait_no_leases(cluster, second)


def test_the_plugin_installs_and_exports_only_the_spank_interface(builds: tuple[Path, Path], tmp_path: Path) -> None:
    plugin, _ = builds
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT / "slurm"), f"BUILDDIR={plugin.parent}",
                    f"DESTDIR={tmp_path}", "PREFIX=/usr", "install"], check=True, capture_output=True)
    installed = tmp_path / "usr" / "lib" / "slurm" / "spank_qrmid.so"
    assert installed.read_bytes() == plugin.read_bytes()
    nm = subprocess.run(["nm", "-D", "--defined-only", str(installed)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in nm.stdout.splitlines()}
    assert {"slurm_spank_init", "slurm_spank_init_post_opt", "slurm_spank_task_init", "slurm_spank_exit",
            "plugin_name", "plugin_type", "plugin_version"} <= exported
    assert not [name for name in exported if name.startswith(("qrmid", "protobuf_c"))], "the stubs stay private"
