"""spank_qrmid.so with a cluster address whose first member is down: the plugin's acquire and release and the
job's Python and C clients all reach the member that runs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from test_spank_qrmid import PYTHON, wait_no_leases

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
