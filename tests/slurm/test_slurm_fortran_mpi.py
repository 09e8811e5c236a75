"""The Fortran example and the MPI example in a batch job on the one-node cluster, under the lease the SPANK plugin
takes for --qpu: the MPI ranks started by srun (Slurm's PMIx plugin, which Debian's Open MPI talks to), then the
Fortran program, both through libqrmid-qrmi with MUNGE and no vendor credential in the job. The job runs as root: srun
loads the plugin in the caller's process, and the cluster's plugin sits in the test's private build directory."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from daemons import short_dir
from qrmi_hpc_programs import Programs, build_programs, counts, mpi_reports

from qrmid.v1 import quantum_resources_pb2 as pb

if TYPE_CHECKING:  # the fixtures come from conftest.py, which is not imported by name
    from conftest import Cluster

@pytest.fixture(scope="module")
def programs() -> Iterator[Programs]:
    scratch = short_dir()
    try:
        yield build_programs(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_mpi_ranks_and_a_fortran_program_run_in_a_job_under_its_lease(cluster: Cluster, programs: Programs) -> None:
    out = cluster.out / "fortran-mpi"
    out.mkdir()
    job_id = cluster.sbatch(f"""
env > {out}/job.env
srun --mpi=pmix -n 2 {programs.mpi} > {out}/mpi.out 2> {out}/mpi.err
{programs.fortran} > {out}/fortran.out 2> {out}/fortran.err
""", "--qpu=local-qiskit", "--ntasks=2", "--time=10", chdir=out)
    job = cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=300)
    logs = {name: (out / name).read_text() if (out / name).exists() else "(none)"
            for name in ("mpi.out", "mpi.err", "fortran.out", "fortran.err")}
    assert (job.state, job.fields["ExitCode"]) == ("COMPLETED", "0:0"), (cluster.output(job_id), logs)

    env = (out / "job.env").read_text()
    assert cluster.vendor_secret not in env, "a vendor secret from the daemon's config reached the job"
    assert "QRMI_PASQAL" not in env and "QRMI_IBM" not in env

    reports = mpi_reports(logs["mpi.out"])
    assert [(report.rank, report.state) for report in reports] == [
        (0, "Completed"), (0, "Completed"), (1, "Completed"), (1, "Completed")], logs
    for report in reports:
        assert sum(counts(report.result).values()) == 100 * (report.rank + 1)
    fortran = logs["fortran.out"].splitlines()
    assert fortran[1] == "state Completed", logs
    assert sum(counts("\n".join(fortran[2:])).values()) == 1000
    task_ids = [report.task_id for report in reports] + [fortran[0].removeprefix("task ")]

    with cluster.client() as admin:
        tasks = [admin.task(task_id) for task_id in task_ids]
    assert {(task.owner, task.slurm_job_id, task.state) for task in tasks} == {
        ("root", job_id, pb.TASK_STATE_COMPLETED)}, "every task ran under the job's lease"
    assert len({task.lease_id for task in tasks}) == 1
    assert cluster.leases(job_id) == [], "the job's lease ended with the job"
    assert cluster.wait_idle() == "idle"
