"""`make demo`: it installs the runtime set only, and prints the examples' results and nothing else."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from daemons import ROOT, short_dir


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_make_demo_installs_the_runtime_set_and_make_test_the_test_extras() -> None:
    fresh = short_dir() / "venv"
    demo, test = make("-n", "demo", f"VENV={fresh}"), make("-n", "test", f"VENV={fresh}")
    assert demo.returncode == 0 and test.returncode == 0, demo.stderr + test.stderr
    installs = [line for line in demo.stdout.splitlines() if "pip install" in line]
    assert installs and installs[-1].endswith(" -e ."), demo.stdout
    assert "[test]" not in demo.stdout, "the demo does not install the test extras"
    assert any(line.endswith("-e '.[test]'") for line in test.stdout.splitlines()), test.stdout
    assert "python -m pytest" in test.stdout


def test_make_demo_prints_the_results_only() -> None:
    venv = short_dir()  # installed already: its stamp is newer than pyproject.toml
    (venv / "bin").mkdir()
    (venv / "bin/qrmid").symlink_to(f"{sys.prefix}/bin/qrmid")
    (venv / ".runtime").touch()
    run = make("demo", f"VENV={venv}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == "", "no daemon log lines, no progress lines"
    parts = re.split(r"(?m)^(\S+) on (\S+) \(.*\):$", run.stdout)
    assert parts[0] == ""
    shown = [(parts[i], parts[i + 1], json.loads(parts[i + 2])) for i in range(1, len(parts), 3)]
    assert [(path, resource) for path, resource, _ in shown] == \
        [("qrmid/examples/bell.json", "local-qiskit"), ("qrmid/examples/pulser.json", "local-pulser")]
    assert all((ROOT / path).is_file() for path, _, _ in shown), "the paths are the repo's"
    bell, pulser = (result for _, _, result in shown)
    assert set(bell["pubs"][0]["meas"]) == {"00", "11"} and sum(bell["pubs"][0]["meas"].values()) == 1024
    assert sum(pulser["counter"].values()) == 100


def test_a_daemon_that_cannot_start_is_reported_with_its_log() -> None:
    scratch = short_dir() / ("x" * 100)  # the private daemon's socket path would pass the 107 bytes allowed
    scratch.mkdir()
    run = subprocess.run([sys.executable, "-m", "qrmid", "demo"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "TMPDIR": str(scratch)})
    assert run.returncode == 1 and run.stdout == ""
    assert "qrmid demo failed: qrmid exited with 1 before serving\nthe daemon's log:\n" in run.stderr
    assert "is longer than the 107 bytes Unix sockets allow" in run.stderr
