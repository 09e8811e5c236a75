"""Helpers shared by the C stub tests (paths, make, pkg-config, the daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
C_DIR = ROOT / "stubs" / "c"
PROTOS = ROOT / "protos"
APT_PACKAGES = "libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libmunge-dev pkg-config valgrind"


def require_tools(*tools: str) -> None:
    """Fail (not skip) when a build tool is missing: CI must install them."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; install with: apt-get install {APT_PACKAGES}")


def make(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run make in stubs/c; fail the test with its output on error."""
    cmd = ["make", "--no-print-directory", "-C", str(C_DIR), f"PYTHON={sys.executable}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def pkg_config(prefix: Path, *args: str) -> list[str]:
    """pkg-config output for the installed qrmid-c, split into words."""
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    out = subprocess.run(["pkg-config", *args, "qrmid-c"], capture_output=True, text=True, env=env, check=True)
    return out.stdout.split()


# gRPC core keeps process-wide state (executor threads' TLS, a few absl::Status
# payloads held through tagged pointers) that valgrind reports as "possibly
# lost" or "still reachable" even after grpc_shutdown(). Only definite and
# indirect leaks, which would be ours, count as errors.
VALGRIND_ARGS = [
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,indirect",
    "--show-leak-kinds=definite,indirect",
    "--error-exitcode=99",
    "--num-callers=30",
]
