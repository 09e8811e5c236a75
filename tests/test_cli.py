"""The qrmid command end to end against a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from daemons import ROOT

EXAMPLES = ROOT / "qrmid" / "examples"


def qrmid(*args: str, address: str, check: bool = True, columns: int = 200) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "qrmid", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "QRMID_ADDRESS": address, "COLUMNS": str(columns)})
    if check:
        assert run.returncode == 0, run.stderr
    return run


def test_run_prints_bell_counts_and_writes_the_raw_result(local_daemon: str, tmp_path: Path) -> None:
    summary = json.loads(qrmid("run", "local-qiskit", str(EXAMPLES / "bell.json"), address=local_daemon).stdout)
    counts = summary["pubs"][0]["meas"]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 1024
    out = tmp_path / "result.json"
    run = qrmid("run", "local-pulser", str(EXAMPLES / "pulser.json"), "--output", str(out), address=local_daemon)
    assert f"result written to {out}" in run.stderr
    assert sum(json.loads(out.read_text())["counter"].values()) == 100


def test_status_watch_result_logs_and_cancel(local_daemon: str) -> None:
    run = qrmid("run", "local-qiskit", str(EXAMPLES / "estimator.json"), "--raw", address=local_daemon)
    assert json.loads(run.stdout)["__type__"] == "PrimitiveResult"
    task_id = run.stderr.split("task ")[-1].split(":")[0]
    assert "completed" in qrmid("status", task_id, address=local_daemon).stdout
    watched = qrmid("watch", task_id, address=local_daemon).stdout.splitlines()
    assert [line.split()[2] for line in watched] == ["queued", "running", "completed"]
    assert "evs" in json.loads(qrmid("result", task_id, address=local_daemon).stdout)["pubs"][0]
    assert "qiskit-aer" in qrmid("logs", task_id, address=local_daemon).stdout
    assert "completed" in qrmid("cancel", task_id, address=local_daemon).stdout, "a finished task stays as it is"


def test_resources_target_and_leases(local_daemon: str) -> None:
    table = qrmid("resources", address=local_daemon).stdout
    assert "local-qiskit" in table and "local-pulser" in table and "online" in table
    assert json.loads(qrmid("target", "local-qiskit", address=local_daemon).stdout)["configuration"]
    token = qrmid("acquire", "local-qiskit", "--slurm-job-id", "9", address=local_daemon).stdout.strip()
    assert "released lease" in qrmid("release", token, address=local_daemon).stderr


def test_listings_never_cut_a_name_or_an_id_however_narrow_the_output(local_daemon: str) -> None:
    tokens = [qrmid("acquire", "local-qiskit", "--slurm-job-id", f"{job}", address=local_daemon).stdout.strip()
              for job in (1234567890123, 1234567890124)]
    try:
        leases = json.loads(qrmid("leases", "--json", address=local_daemon).stdout)
        names = [r["name"] for r in json.loads(qrmid("resources", "--json", address=local_daemon).stdout)]
        assert len(leases) >= 2 and {"local-qiskit", "local-pulser"} <= set(names)
        for columns in (20, 80):
            for listing in (("leases",), ("admin", "leases")):
                shown = qrmid(*listing, address=local_daemon, columns=columns).stdout
                for lease in leases:
                    assert lease["id"] in shown and lease["slurm_job_id"] in shown, (columns, listing, shown)
            shown = qrmid("resources", address=local_daemon, columns=columns).stdout
            assert all(name in shown for name in names) and "…" not in shown, shown
    finally:
        for token in tokens:
            qrmid("release", token, address=local_daemon)


def test_errors_are_one_clear_line(local_daemon: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"program_id": "sampler", "parameters": {"pubs": [["OPENQASM 3.0; qubit q; nope q;"]],
                                                                       "version": 2}}))
    run = qrmid("run", "local-qiskit", str(bad), address=local_daemon, check=False)
    assert run.returncode == 1
    assert "Error: INVALID_ARGUMENT: invalid payload for 'local-qiskit': pub 0: circuit is not valid OpenQASM 3" \
        in run.stderr
    bad.write_text(json.dumps({"sequence": {}}))
    run = qrmid("run", "local-pulser", str(bad), address=local_daemon, check=False)
    assert 'needs an integer "job_runs"' in run.stderr
    run = qrmid("status", "no-such-task", address=local_daemon, check=False)
    assert "Error: NOT_FOUND: no task with id 'no-such-task'" in run.stderr
    assert "Traceback" not in run.stderr


def test_unreachable_daemon_is_reported(tmp_path: Path) -> None:
    run = qrmid("resources", address=f"unix:{tmp_path}/none.sock", check=False)
    assert run.returncode == 1 and "Error: UNAVAILABLE" in run.stderr


def test_demo_runs_both_examples() -> None:
    run = subprocess.run([sys.executable, "-m", "qrmid", "demo"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert '"11"' in run.stdout and '"counter"' in run.stdout
