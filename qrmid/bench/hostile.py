"""Hostile payloads: each input that once exhausted or crashed validation, built without building its bomb (used by
the tests and by ``python -m qrmid.bench.validation``). ``python -m qrmid.bench.hostile`` sends each one to a daemon:
``python -m qrmid.bench.validation --hostile``."""

from __future__ import annotations

import base64
import io
import json
import zlib
from typing import Any

import numpy as np

from qrmid import examples

BELL: str = examples.load("bell")["parameters"]["pubs"][0][0]
PARAMETRIC = "OPENQASM 3.0;\ninclude \"stdgates.inc\";\ninput float[64] a;\nqubit[1] q;\nbit[1] c;\nrx(a) q[0];\n" \
             "c[0] = measure q[0];\n"


def npy_blob(shape: tuple[int, ...], dtype: str = "<f8", chunk: int = 16 << 20) -> str:
    """A zeroed array in NumPy's .npy format, zlib-compressed and base64-encoded as IBM's RuntimeEncoder sends an
    ndarray, streamed so that its inflated size is never held here."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    deflater = zlib.compressobj(9)
    parts = [deflater.compress(header.getvalue())]  # the magic string, then the header
    left = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    zeros = bytes(min(chunk, left))
    while left > 0:
        parts.append(deflater.compress(zeros[:min(chunk, left)]))
        left -= chunk
    parts.append(deflater.flush())
    return base64.b64encode(b"".join(parts)).decode()


def ndarray(shape: tuple[int, ...]) -> dict[str, Any]:
    return {"__type__": "ndarray", "__value__": npy_blob(shape)}


def sampler(*pubs: Any, **extra: Any) -> str:
    return json.dumps({"pubs": list(pubs), "version": 2, **extra})


def estimator(pub: Any = None, **extra: Any) -> str:
    return json.dumps({"pubs": [pub or [BELL.replace("c = measure q;", ""), "ZZ"]], "version": 2, **extra})


def inflating_array(gib: float = 1.5) -> str:
    """A 1.9 MB sampler input whose parameter values inflate to ``gib`` GiB."""
    rows = int(gib * (1 << 30)) // 8
    return sampler([PARAMETRIC, ndarray((rows, 1))])


def huge_shape() -> str:
    """A sampler input of a few hundred bytes whose parameter values declare 10**16 sets of no parameters."""
    return sampler([BELL, ndarray((10**16, 0))])


def deep(levels: int = 200_000) -> str:
    return "[" * levels + "]" * levels


def qasm(megabytes: float = 2.0) -> str:
    """A sampler input with an OpenQASM 3 circuit of about ``megabytes`` MB."""
    line = "rz(0.123456789) q[0];\nsx q[1];\ncx q[0], q[1];\n"
    body = line * int(megabytes * 1e6 / len(line))
    return sampler([f"OPENQASM 3.0;\ninclude \"stdgates.inc\";\nqubit[2] q;\nbit[2] c;\n{body}c = measure q;\n"])


def pulser_atoms(atoms: int = 20_000) -> str:
    """A Pulser sequence with ``atoms`` atoms on a device the sequence describes itself, allowing them all."""
    doc = examples.load("pulser")["sequence"]
    side = int(atoms ** 0.5) + 1
    doc["register"] = [{"name": f"q{i}", "x": 5.0 * (i % side), "y": 5.0 * (i // side)} for i in range(atoms)]
    doc["device"].update(max_atom_num=atoms, max_radial_distance=10 * side)
    return json.dumps(doc)


def pulser_deep(levels: int = 200_000) -> str:
    doc = json.dumps(examples.load("pulser")["sequence"])
    return doc.replace('"variables": {}', '"variables": ' + deep(levels), 1) if '"variables": {}' in doc else \
        doc[:-1] + ', "extra": ' + deep(levels) + "}"


if __name__ == "__main__":
    from qrmid.bench.validation import main

    main(["--hostile"])
