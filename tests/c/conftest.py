"""Fixtures for the C stubs: an out-of-tree build, an install, a live daemon."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cstubs_support import make, pkg_config, require_tools


@pytest.fixture(scope="session")
def c_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library and example, built with -Wall -Wextra -Werror into a temp dir."""
    require_tools("make", "cc", "pkg-config", "protoc-c")
    build = tmp_path_factory.mktemp("c-build")
    make("-j2", f"BUILDDIR={build}", "all")
    return build


@pytest.fixture(scope="session")
def c_prefix(c_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make install` into a temp prefix."""
    prefix = tmp_path_factory.mktemp("c-prefix")
    make(f"BUILDDIR={c_build}", f"PREFIX={prefix}", "install")
    return prefix


@pytest.fixture(scope="session")
def c_probe(c_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/c/qrmid_probe.c built against the installed shared library via pkg-config."""
    out = tmp_path_factory.mktemp("c-probe") / "qrmid_probe"
    cmd = [
        "cc",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-g",
        "-o",
        str(out),
        str(Path(__file__).parent / "qrmid_probe.c"),
        *pkg_config(c_prefix, "--cflags", "--libs"),
        f"-Wl,-rpath,{c_prefix / 'lib'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


# --- live daemon ---------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(local_daemon: str) -> str:
    """The shared qrmid subprocess serving the local simulators (tests/conftest.py)."""
    return local_daemon
