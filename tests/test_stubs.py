"""The committed Python stubs are exactly what protos/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daemons import ROOT

COMMITTED = ROOT / "stubs" / "python"


def test_python_stubs_match_the_protos(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(COMMITTED / "generate.py"), str(tmp_path)], check=True,
                   capture_output=True)
    fresh, committed = _stubs(tmp_path), _stubs(COMMITTED)
    assert fresh, "the generator wrote nothing"
    stale = sorted(str(name) for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"stubs/python is stale; run `python stubs/python/generate.py`: {stale}"


def _stubs(root: Path) -> dict[Path, bytes]:
    """The generated modules and type stubs under ``root`` (not the bytecode Python caches beside them)."""
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*_pb2*") if p.suffix in {".py", ".pyi"}}


def test_stubs_are_importable_as_qrmid_v1() -> None:
    from qrmid.v1 import quantum_resources_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["QuantumResources"]
    assert service.full_name == "qrmid.v1.QuantumResources"
    assert {"ListResources", "GetResource", "GetTarget", "GetMetadata", "Acquire", "Release", "StartTask",
            "StopTask", "GetTask", "WatchTask", "GetTaskResult", "GetTaskLogs"} <= set(service.methods_by_name)


def test_protos_use_no_proto3_optional() -> None:
    for proto in (ROOT / "protos").rglob("*.proto"):
        for number, line in enumerate(proto.read_text().splitlines(), 1):
            assert not line.strip().startswith("optional "), f"{proto}:{number} uses proto3 optional"
