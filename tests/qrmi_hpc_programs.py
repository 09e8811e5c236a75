"""The Fortran example (stubs/fortran) and the MPI example (stubs/mpi), built with their own Makefiles against
libqrmid-qrmi installed into a temporary prefix and found with pkg-config, as a site builds them; and reading what
they print."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from qrmid.results import summarize

ROOT = Path(__file__).resolve().parents[1]
APT_PACKAGES = ("gfortran openmpi-bin libopenmpi-dev gcc make pkg-config libgrpc-dev libprotobuf-c-dev "
                "protobuf-c-compiler libprotobuf-dev libmunge-dev libjansson-dev valgrind")
# Open MPI refuses to run as root without --allow-run-as-root; --oversubscribe lets more ranks than cores run.
MPIRUN = ("mpirun", "--allow-run-as-root", "--oversubscribe")


def require_tools(*tools: str) -> None:
    """Fail (never skip) when a tool is missing: the tests' machines install them (Makefile DEB_PACKAGES)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; install with: apt-get install {APT_PACKAGES}")


def make(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = ["make", "--no-print-directory", f"PYTHON={sys.executable}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@dataclass(frozen=True)
class Programs:
    """The installed library's prefix and the two programs linked with it."""

    prefix: Path
    fortran: Path
    mpi: Path


def build_programs(scratch: Path) -> Programs:
    """Installs libqrmid-qrmi under ``scratch``/prefix, then builds both examples with ``make`` and pkg-config."""
    require_tools("make", "cc", "pkg-config", "protoc-c", "gfortran", "mpicc", "mpirun")
    prefix = scratch / "prefix"
    make("-C", str(ROOT / "stubs" / "c" / "qrmi"), "-j2", f"BUILDDIR={scratch / 'c'}", f"PREFIX={prefix}", "install")
    env = {"PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    rpath = f"LDFLAGS=-Wl,-rpath,{prefix / 'lib'}"
    make("-C", str(ROOT / "stubs" / "fortran"), f"BUILDDIR={scratch / 'fortran'}", rpath, env=env)
    make("-C", str(ROOT / "stubs" / "mpi"), f"BUILDDIR={scratch / 'mpi'}", rpath, env=env)
    return Programs(prefix, scratch / "fortran" / "qrmi_example", scratch / "mpi" / "qrmi_mpi_example")


def without_job(env: dict[str, str]) -> dict[str, str]:
    """``env`` without any job or daemon variable, so a test sets exactly the ones it means."""
    return {name: value for name, value in env.items()
            if not name.startswith(("QRMI", "SLURM_", "OMPI_", "PMIX_")) and "QRMI_JOB" not in name}


@dataclass(frozen=True)
class TaskReport:
    """One task as the MPI example's rank 0 prints it."""

    rank: int
    task_id: str
    state: str
    result: str


def mpi_reports(stdout: str) -> list[TaskReport]:
    """The `rank R task ID STATE` lines and the line after each."""
    lines = stdout.splitlines()
    reports = []
    for at, line in enumerate(lines):
        if line.startswith("rank "):
            _, rank, _, task_id, state = line.split(" ")
            reports.append(TaskReport(int(rank), task_id, state, lines[at + 1]))
    return reports


def counts(result: str) -> dict[str, int]:
    """A one-pub Bell sampler's counts of register ``meas``, decoded from IBM's RuntimeEncoder JSON."""
    return summarize(result.encode())["pubs"][0]["meas"]
