"""Generate the Python gRPC stubs from protos/ (run: python stubs/python/generate.py [OUTDIR]).

The stubs land in stubs/python/qrmid/v1/, which the qrmid package exposes as ``qrmid.v1``
(qrmid/v1 is a link to it). tests/test_stubs.py fails when the committed stubs differ from a fresh run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"


def generate(out: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto under protos/qrmid into ``out``."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "qrmid").rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out.rglob("*_pb2*.py*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for path in generate(target):
        print(path)
