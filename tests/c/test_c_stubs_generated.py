"""The committed C stubs are exactly what the generator writes, and it copes with new services."""

from __future__ import annotations

import filecmp
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cstubs_support import C_DIR, PROTOS, make, require_tools

GENERATED = C_DIR / "generated"


def load_generator():
    """Import stubs/c/gen/qrmid_c_gen.py as a module."""
    spec = importlib.util.spec_from_file_location("qrmid_c_gen", C_DIR / "gen" / "qrmid_c_gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tree(root: Path) -> list[str]:
    """Relative paths of every file under root."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_committed_stubs_are_up_to_date(tmp_path: Path) -> None:
    require_tools("protoc-c")
    out = tmp_path / "generated"
    make(f"GENERATED={out}", "generate")
    assert tree(out) == tree(GENERATED), "file set differs: run `make -C stubs/c generate` and commit"
    _, mismatch, errors = filecmp.cmpfiles(GENERATED, out, tree(out), shallow=False)
    assert not mismatch and not errors, f"stale C stubs {mismatch + errors}: run `make -C stubs/c generate` and commit"


def test_every_rpc_has_a_wrapper() -> None:
    header = (GENERATED / "qrmid" / "v1" / "quantum_resources.qrmid-c.h").read_text()
    proto = (PROTOS / "qrmid" / "v1" / "quantum_resources.proto").read_text()
    gen = load_generator()
    rpcs = [line.split()[1].split("(")[0] for line in proto.splitlines() if line.strip().startswith("rpc ")]
    assert rpcs
    for name in rpcs:
        fn = f"qrmid_v1_quantum_resources_{gen.camel_to_lower(name)}"
        streaming = "returns (stream" in next(l for l in proto.splitlines() if f"rpc {name}(" in l)
        if streaming:
            for suffix in ("_open(", "_next(", "_close("):
                assert fn + suffix in header
        else:
            assert f"grpc_status_code {fn}(" in header


@pytest.mark.parametrize(
    ("full_name", "c_type", "c_lower"),
    [
        ("qrmid.v1.ListResourcesRequest", "Qrmid__V1__ListResourcesRequest", "qrmid__v1__list_resources_request"),
        ("google.protobuf.Timestamp", "Google__Protobuf__Timestamp", "google__protobuf__timestamp"),
        ("qrmid.v1.Outer.Inner", "Qrmid__V1__Outer__Inner", "qrmid__v1__outer__inner"),
        ("my_pkg.v2.HTTPThing", "MyPkg__V2__HTTPThing", "my_pkg__v2__httpthing"),
    ],
)
def test_names_follow_protoc_c(full_name: str, c_type: str, c_lower: str) -> None:
    gen = load_generator()
    assert gen.c_type_name(full_name) == c_type
    assert gen.c_lower_name(full_name) == c_lower


EXTRA_PROTO = """\
syntax = "proto3";

package qrmid.v1.testing;

import "google/protobuf/empty.proto";
import "qrmid/v1/quantum_resources.proto";

// Admin operations, to check that new files and services are picked up.
service AdminService {
  // Drains one resource. A comment with */ inside must not end the C comment.
  rpc DrainResource(qrmid.v1.GetResourceRequest) returns (qrmid.v1.Resource);
  // Streams every task.
  rpc ListAllTasks(google.protobuf.Empty) returns (stream qrmid.v1.Task);
}

// A second service in the same file.
service Pinger {
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty);
  rpc Echo(Outer.Inner) returns (Outer.Inner);
}

message Outer {
  message Inner {
    string text = 1;
  }
}
"""


def test_new_files_and_services_generate_and_build(tmp_path: Path) -> None:
    require_tools("protoc-c", "cc", "pkg-config")
    protos = tmp_path / "protos"
    shutil.copytree(PROTOS, protos)
    (protos / "qrmid" / "v1" / "admin_testing.proto").write_text(EXTRA_PROTO)
    gen = tmp_path / "gen"
    build = tmp_path / "build"
    make(f"PROTO_DIR={protos}", f"GENERATED={gen}", "generate")
    header = (gen / "qrmid" / "v1" / "admin_testing.qrmid-c.h").read_text()
    for fn in (
        "grpc_status_code qrmid_v1_testing_admin_service_drain_resource(",
        "grpc_status_code qrmid_v1_testing_admin_service_list_all_tasks_open(",
        "grpc_status_code qrmid_v1_testing_pinger_ping(",
        "Qrmid__V1__Testing__Outer__Inner **response,",
        '#include "google/protobuf/empty.pb-c.h"',
    ):
        assert fn in header
    assert "*/ inside" not in header
    assert (gen / "google" / "protobuf" / "empty.pb-c.c").exists()
    make("-j2", f"PROTO_DIR={protos}", f"GENERATED={gen}", f"BUILDDIR={build}", "all")
    nm = subprocess.run(["nm", "-D", str(build / "libqrmid-c.so")], capture_output=True, text=True, check=True)
    assert "qrmid_v1_testing_admin_service_list_all_tasks_next" in nm.stdout
    assert "qrmid_v1_quantum_resources_watch_task_next" in nm.stdout


def test_client_streaming_is_refused(tmp_path: Path) -> None:
    require_tools("protoc-c")
    protos = tmp_path / "protos"
    (protos / "x").mkdir(parents=True)
    (protos / "x" / "up.proto").write_text(
        'syntax = "proto3";\npackage x;\nmessage M {}\nservice S { rpc Up(stream M) returns (M); }\n'
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(C_DIR / "gen" / "qrmid_c_gen.py"),
            "--proto-dir",
            str(protos),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "client-streaming" in proc.stderr
