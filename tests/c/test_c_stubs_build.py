"""The C library, example and pkg-config file build with -Werror, out of tree, and install."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cstubs_support import C_DIR, make, pkg_config, require_tools


def snapshot(root: Path) -> dict[str, float]:
    """Every file under root (but an in-tree build dir) with its mtime."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_mtime
        for p in root.rglob("*")
        if p.is_file() and "build" not in p.relative_to(root).parts[:1]
    }


def test_out_of_tree_build_leaves_the_tree_clean(tmp_path: Path) -> None:
    require_tools("make", "cc", "pkg-config")
    before = snapshot(C_DIR)
    proc = make("-j2", f"BUILDDIR={tmp_path / 'b'}", "all")
    assert "-Wall -Wextra -Werror" in proc.stdout
    assert snapshot(C_DIR) == before


def test_build_outputs(c_build: Path) -> None:
    for name in ("libqrmid-c.a", "libqrmid-c.so", "libqrmid-c.so.0", "qrmid-c.pc", "qrmid_example"):
        assert (c_build / name).exists(), name
    nm = subprocess.run(
        ["nm", "-D", "--defined-only", str(c_build / "libqrmid-c.so")], capture_output=True, text=True, check=False
    )
    for symbol in (
        "qrmid_client_new",
        "qrmid_v1_quantum_resources_list_resources",
        "qrmid_v1_quantum_resources_watch_task_open",
        "qrmid_v1_quantum_resources_get_task_result_next",
        "qrmid__v1__task__descriptor",
    ):
        assert symbol in nm.stdout, symbol
    soname = subprocess.run(
        ["objdump", "-p", str(c_build / "libqrmid-c.so")], capture_output=True, text=True, check=False
    )
    assert "SONAME               libqrmid-c.so.0" in soname.stdout


def test_install_and_pkg_config(c_prefix: Path) -> None:
    include = c_prefix / "include" / "qrmid-c"
    for header in (
        "qrmid_c.h",
        "qrmid/v1/quantum_resources.qrmid-c.h",
        "qrmid/v1/quantum_resources.pb-c.h",
        "google/protobuf/timestamp.pb-c.h",
    ):
        assert (include / header).is_file(), header
    for lib in ("libqrmid-c.a", "libqrmid-c.so", "libqrmid-c.so.0"):
        assert (c_prefix / "lib" / lib).exists(), lib
    assert f"-I{include}" in pkg_config(c_prefix, "--cflags")
    libs = pkg_config(c_prefix, "--libs")
    assert "-lqrmid-c" in libs and "-lgrpc" in libs and "-lprotobuf-c" in libs


def test_destdir_install(c_build: Path, tmp_path: Path) -> None:
    make(f"BUILDDIR={c_build}", f"DESTDIR={tmp_path}", "PREFIX=/usr", "install")
    pc = (tmp_path / "usr" / "lib" / "pkgconfig" / "qrmid-c.pc").read_text()
    assert "includedir=/usr/include" in pc and "Requires: grpc libprotobuf-c" in pc
    assert (tmp_path / "usr" / "include" / "qrmid-c" / "qrmid" / "v1" / "quantum_resources.qrmid-c.h").is_file()


def test_probe_links_through_pkg_config(c_probe: Path) -> None:
    ldd = subprocess.run(["ldd", str(c_probe)], capture_output=True, text=True, check=True)
    assert "libqrmid-c.so.0" in ldd.stdout
