"""The C runtime and example against a scripted gRPC server (no daemon needed).

The server speaks qrmid.v1.QuantumResources at the byte level with canned
answers, so each error path of the C side (status in the middle of a stream,
deadline, undecodable response, metadata, TLS) can be provoked on demand.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cstubs_support import VALGRIND_ARGS

SERVICE = "qrmid.v1.QuantumResources"
TOKEN = "Bearer s3cret"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _task(state: int) -> bytes:
    return _len_field(1, b"t1") + _int_field(3, state)


def _list_resources(request: bytes, context: grpc.ServicerContext) -> bytes:
    if dict(context.invocation_metadata()).get("authorization") != TOKEN:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
    return _len_field(1, _len_field(1, b"fake-qpu"))


def _watch_task(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for state in (1, 2, 3):  # QUEUED, RUNNING, COMPLETED
        yield _task(state)


def _get_task_result(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    if b"t2" in request:  # the example's task: a JSON result in two chunks
        yield _len_field(1, b"application/json") + _int_field(2, 24) + _len_field(3, b'{"counts": ')
        yield _len_field(3, b'{"00": 1}}\n')
        return
    yield _len_field(1, b"text/plain") + _int_field(2, 5) + _len_field(3, b"part1")
    context.abort(grpc.StatusCode.NOT_FOUND, "result gone mid-stream")


def _acquire(request: bytes, context: grpc.ServicerContext) -> bytes:
    if b"local-qiskit" not in request:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such resource")
    return _len_field(1, b"l1") + _len_field(2, b"tok") + _len_field(3, b"local-qiskit")


def _start_task(request: bytes, context: grpc.ServicerContext) -> bytes:
    for needed in (b"local-qiskit", b"tok", b"sampler", b'include \\"stdgates.inc\\"', b'"shots":256'):
        if needed not in request:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request lacks {needed!r}")
    return _len_field(1, b"t2") + _int_field(3, 1)


def _run_task(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    _start_task(request, context)
    for state in (1, 2, 3):  # QUEUED, RUNNING, COMPLETED
        yield _len_field(1, _len_field(1, b"t2") + _int_field(3, state))
    for chunk in _get_task_result(b"t2", context):
        yield _len_field(2, chunk)


def _release(request: bytes, context: grpc.ServicerContext) -> bytes:
    if b"tok" not in request:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such lease")
    return _len_field(1, _len_field(1, b"l1"))


def _get_task(request: bytes, context: grpc.ServicerContext) -> bytes:
    time.sleep(3)
    return _task(2)


def _stop_task(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"\xff\xff\xff\xff"  # not a valid Task


def _server() -> grpc.Server:
    handlers = {
        "ListResources": grpc.unary_unary_rpc_method_handler(_list_resources),
        "WatchTask": grpc.unary_stream_rpc_method_handler(_watch_task),
        "GetTaskResult": grpc.unary_stream_rpc_method_handler(_get_task_result),
        "GetTask": grpc.unary_unary_rpc_method_handler(_get_task),
        "StopTask": grpc.unary_unary_rpc_method_handler(_stop_task),
        "Acquire": grpc.unary_unary_rpc_method_handler(_acquire),
        "StartTask": grpc.unary_unary_rpc_method_handler(_start_task),
        "RunTask": grpc.unary_stream_rpc_method_handler(_run_task),
        "Release": grpc.unary_unary_rpc_method_handler(_release),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server


@pytest.fixture(scope="module")
def unix_server() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="q")
    server = _server()
    target = f"unix:{tmp}/probe.sock"
    server.add_insecure_port(target)
    server.start()
    yield target
    server.stop(grace=None)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    assert shutil.which("openssl"), "openssl is needed to make a test certificate (Debian package openssl)"
    tmp = tmp_path_factory.mktemp("tls")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=qrmid-test",
            "-addext",
            "subjectAltName=DNS:qrmid.test,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = _server()
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    yield f"127.0.0.1:{port}", cert
    server.stop(grace=None)


EXPECTED = [
    "client: OK",
    "list-noauth: UNAUTHENTICATED: missing or wrong token",
    "bad-metadata: INVALID_ARGUMENT: metadata key must be",
    "add-metadata: OK",
    "list: OK [fake-qpu]",
    "watch: OK [1,2,3]",
    "watch-after-end: OK [no message]",
    "result: NOT_FOUND: result gone mid-stream [part1]",
    "result-again: NOT_FOUND: result gone mid-stream",
    "early-close: OK [got one]",
    "deadline: DEADLINE_EXCEEDED",
    "undecodable: INTERNAL: /qrmid.v1.QuantumResources/StopTask: cannot decode the response as qrmid.v1.Task",
    "wrong-type: INVALID_ARGUMENT: /qrmid.v1.QuantumResources/GetTask: request is not an initialised",
    "unimplemented: UNIMPLEMENTED",
]


def check_output(stdout: str) -> None:
    lines = stdout.splitlines()
    assert len(lines) == len(EXPECTED), stdout
    for got, want in zip(lines, EXPECTED):
        assert got.startswith(want), f"{got!r} does not start with {want!r}\n{stdout}"
    assert lines[-1].endswith("[no response]"), stdout


def test_calling_convention_over_unix_socket(c_probe: Path, unix_server: str) -> None:
    proc = subprocess.run([str(c_probe), unix_server], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    check_output(proc.stdout)


def test_calling_convention_over_tls(c_probe: Path, tls_server: tuple[str, Path]) -> None:
    target, cert = tls_server
    proc = subprocess.run([str(c_probe), target, str(cert)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    check_output(proc.stdout)


def test_tls_server_name_is_checked(c_probe: Path, tls_server: tuple[str, Path]) -> None:
    target, cert = tls_server
    proc = subprocess.run(
        [str(c_probe), target, str(cert), "qrmid.test"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "list: OK [fake-qpu]" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run(
        [str(c_probe), target, str(cert), "other.name"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "list: UNAVAILABLE" in proc.stdout, proc.stdout + proc.stderr


def test_calling_convention_under_valgrind(c_probe: Path, unix_server: str) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is missing: apt-get install valgrind")
    proc = subprocess.run(
        ["valgrind", *VALGRIND_ARGS, str(c_probe), unix_server],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    check_output(proc.stdout)
    assert "ERROR SUMMARY: 0 errors" in proc.stderr


EXAMPLE_EXPECTED = [
    "resource fake-qpu (): RESOURCE_STATUS_UNSPECIFIED, slots 0/0 free, 0 queued",
    "lease l1 on local-qiskit",
    "task t2: TASK_STATE_QUEUED",
    "task t2: TASK_STATE_RUNNING",
    "task t2: TASK_STATE_COMPLETED",
    "result of task t2 (application/json, 22 bytes in one RunTask call):",
    '{"counts": {"00": 1}}',
    "",
    "released lease l1 (0 task(s) cancelled)",
]


def test_example_flow_against_scripted_server(c_build: Path, unix_server: str) -> None:
    proc = subprocess.run(
        [str(c_build / "qrmid_example"), unix_server, f"authorization={TOKEN}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == EXAMPLE_EXPECTED


def test_example_flow_under_valgrind(c_build: Path, unix_server: str) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is missing: apt-get install valgrind")
    proc = subprocess.run(
        ["valgrind", *VALGRIND_ARGS, str(c_build / "qrmid_example"), unix_server, f"authorization={TOKEN}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stdout.splitlines() == EXAMPLE_EXPECTED
    assert "ERROR SUMMARY: 0 errors" in proc.stderr


def test_example_fails_with_the_status_message(c_build: Path, unix_server: str) -> None:
    proc = subprocess.run(
        [str(c_build / "qrmid_example"), unix_server], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert "ListResources failed: UNAUTHENTICATED: missing or wrong token" in proc.stderr
