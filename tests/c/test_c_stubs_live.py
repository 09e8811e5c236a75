"""The C example runs a Sampler job end to end against a live `qrmid serve`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cstubs_support import VALGRIND_ARGS


def check_run(stdout: str) -> None:
    """The example listed resources, ran the task to COMPLETED, printed a JSON result and released."""
    assert "resource local-qiskit (" in stdout, stdout
    assert "TASK_STATE_COMPLETED" in stdout, stdout
    assert "released lease" in stdout, stdout
    head, sep, rest = stdout.partition("bytes in ")
    assert sep, stdout
    result_text = rest.split("\n", 1)[1].rsplit("\nreleased lease", 1)[0]
    assert "application/json" in head.rsplit("\n", 1)[-1], stdout
    result = json.loads(result_text)
    assert result, stdout


@pytest.mark.slow
def test_example_against_daemon(c_build: Path, daemon: str) -> None:
    proc = subprocess.run(
        [str(c_build / "qrmid_example"), daemon], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    check_run(proc.stdout)


@pytest.mark.slow
def test_example_under_valgrind(c_build: Path, daemon: str) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is missing: apt-get install valgrind")
    proc = subprocess.run(
        ["valgrind", *VALGRIND_ARGS, str(c_build / "qrmid_example"), daemon],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    check_run(proc.stdout)
    assert "ERROR SUMMARY: 0 errors" in proc.stderr
    assert "definitely lost: 0 bytes" in proc.stderr or "All heap blocks were freed" in proc.stderr


def test_example_reports_an_unreachable_daemon(c_build: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(c_build / "qrmid_example"), f"unix:{tmp_path}/none.sock"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "ListResources failed: UNAVAILABLE" in proc.stderr, proc.stderr
