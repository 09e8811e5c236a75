"""Authentication under load: a client retrying bad credentials cannot flood the daemon's log, and MUNGE
decoding never waits behind other blocking work. Real daemons, a real munged, real gRPC over real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemons import ROOT, config, running, short_dir, wait_serving, write_config
from munged import munged

from qrmid.ops import munge
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

TOKEN = "good-token-0123456789"
REFUSED = re.compile(r"refused a call from (\S+): (.*)$")
SUMMARY = re.compile(r"refused (\d+) more call\(s\) in the last 1 s .*?: (.*)$")


@pytest.fixture(scope="module")
def munge_socket() -> Iterator[str]:
    with munged() as path:
        yield str(path)


def _serve_with_tokens(scratch: Path, log: Path) -> subprocess.Popen[bytes]:
    tokens = write_config(scratch / "tokens.toml", f'[[token]]\nname = "svc"\ntoken = "{TOKEN}"\n')
    cfg = write_config(scratch / "qrmid.toml", f"""
[daemon]
socket = "{scratch / 'qrmid.sock'}"
auth = "token"
[auth]
tokens_file = "{tokens}"
failure_log_seconds = 1
[limits]
calls_per_second = 0
[journal]
path = "{scratch / 'journal.db'}"
[[resources]]
type = "noop"
name = "noop"
""")
    with log.open("w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(cfg)], cwd=ROOT,
                                stderr=stderr)


def test_a_client_retrying_bad_credentials_gets_one_log_line_per_reason_and_a_summary() -> None:
    scratch = short_dir()
    log = scratch / "daemon.log"
    process = _serve_with_tokens(scratch, log)
    address = f"unix:{scratch / 'qrmid.sock'}"
    try:
        wait_serving(address, process=process)
        bad = {"unknown": (("authorization", "Bearer not-the-token-at-all"),), "missing": ()}
        counts = {"unknown": 600, "missing": 200}
        began = time.monotonic()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.QuantumResourcesStub(channel)
            for kind, metadata in bad.items():
                for _ in range(counts[kind]):
                    with pytest.raises(grpc.RpcError) as refused:
                        stub.ListResources(pb.ListResourcesRequest(), metadata=metadata, timeout=30)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # the daemon keeps serving: a good token still gets an answer
            good = stub.ListResources(pb.ListResourcesRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),),
                                      timeout=30)
            assert [resource.name for resource in good.resources] == ["noop"]
        deadline = time.monotonic() + 30
        while "more call(s)" not in log.read_text() or _summed(log) < sum(counts.values()):
            assert time.monotonic() < deadline, f"no complete summary in:\n{log.read_text()}"
            time.sleep(0.1)
        elapsed = time.monotonic() - began
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    lines = log.read_text().splitlines()
    firsts = [REFUSED.search(line) for line in lines if REFUSED.search(line)]
    summaries = [line for line in lines if SUMMARY.search(line)]
    reasons = ["unknown bearer token",
               ("this listener needs 'authorization: Bearer <token>' metadata with a token from the daemon's tokens "
               "file (qrmid clients send it with QRMID_AUTH=token QRMID_TOKEN_FILE=...)")]
    assert {match.group(2) for match in firsts} == set(reasons)
    assert len(summaries) <= elapsed + 2, "one summary per interval of one second at most"
    for reason in reasons:  # logged once per interval, not once per call
        assert sum(match.group(2) == reason for match in firsts) <= len(summaries) + 1
    assert all(match.group(1).startswith("unix:") for match in firsts)
    assert _summed(log) == sum(counts.values()), "every refused call is counted in a line"
    assert "from unix:" in summaries[0] and "unknown bearer token" in "".join(summaries)
    print(f"{sum(counts.values())} refused calls wrote {len(firsts) + len(summaries)} log lines")


def _summed(log: Path) -> int:
    """Refused calls the log accounts for: one per first-refusal line, plus each summary's count."""
    total = 0
    for line in log.read_text().splitlines():
        if match := SUMMARY.search(line):
            total += int(match.group(1))
        elif REFUSED.search(line):
            total += 1
    return total


async def test_munge_authentication_is_answered_while_the_default_executor_is_saturated(munge_socket: str) -> None:
    cfg = config([{"type": "noop", "name": "noop"}], daemon={"auth": "munge", "socket_mode": "0666"},
                 auth={"munge_socket": munge_socket, "munge_threads": 2})
    async with running(cfg) as daemon:
        loop = asyncio.get_running_loop()
        release = threading.Event()
        workers = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor size
        blockers = [loop.run_in_executor(None, release.wait) for _ in range(workers * 2)]
        try:
            async with grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
                stub = pb_grpc.QuantumResourcesStub(channel)
                for _ in range(3):  # each call needs a fresh credential
                    credential = munge.encode(b"", munge_socket)  # here, not in the saturated executor
                    answer = await asyncio.wait_for(stub.ListResources(
                        pb.ListResourcesRequest(), metadata=(("x-qrmid-munge", credential),)), 60)
                    assert [resource.name for resource in answer.resources] == ["noop"]
            assert not any(blocker.done() for blocker in blockers), "answered while every default worker was busy"
        finally:
            release.set()
            await asyncio.gather(*blockers)
