"""Per-client limits over a real socket: call rate, open streams, field lengths, and streams that are never read.

Two users authenticate with bearer tokens, so each is a separate client of one in-process daemon.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from daemons import config, running, short_dir, wait_serving

from qrmid.api.limits import TokenBucket
from qrmid.api.servicer import RESULT_CHUNK_BYTES
from qrmid.daemon import Daemon
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab", "ops": "ops-token-0123456789ab"}


class Client:
    """A user's stub: every call carries the user's bearer token."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = pb_grpc.QuantumResourcesStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.stub, name)
        return lambda request, **kw: method(request, metadata=self.metadata, timeout=60, **kw)


@asynccontextmanager
async def daemon_with(limits: dict[str, Any], delay: float = 0.0) -> AsyncIterator[tuple[Daemon, dict[str, Client]]]:
    tokens = short_dir() / "tokens.toml"
    tokens.write_text("".join(f'[[token]]\nname = "{name}"\ntoken = "{token}"\nadmin = {str(name == "ops").lower()}\n'
                              for name, token in TOKENS.items()))
    os.chmod(tokens, 0o600)
    cfg = config([{"type": "noop", "name": "noop", "slots": 1, "delay_seconds": delay}],
                 daemon={"auth": "token"}, auth={"tokens_file": str(tokens)}, limits=limits)
    async with running(cfg) as daemon:
        channels = {name: grpc.aio.insecure_channel(f"unix:{daemon.socket}") for name in TOKENS}
        try:
            yield daemon, {name: Client(channels[name], token) for name, token in TOKENS.items()}
        finally:
            for channel in channels.values():
                await channel.close()


def start_request() -> pb.StartTaskRequest:
    return pb.StartTaskRequest(resource="noop", payload=pb.Payload(
        pulser_sequence=pb.PulserSequence(sequence="{}", job_runs=1)))


def test_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5), "half a second at 2/s brings back one call"
    assert bucket.full(10.0)


async def test_a_flooding_client_is_rate_limited_while_another_is_served() -> None:
    async with daemon_with({"calls_per_second": 1, "burst": 5}) as (_, users):
        alice, bob = users["alice"], users["bob"]
        refused = []
        for _ in range(20):
            try:
                await alice.ListResources(pb.ListResourcesRequest())
            except grpc.aio.AioRpcError as exc:
                refused.append(exc)
        assert refused, "20 calls at once from one client exceed a burst of 5"
        assert {exc.code() for exc in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "rate limit: 1 calls/s per client" in (refused[0].details() or "")
        assert len((await bob.ListResources(pb.ListResourcesRequest())).resources) == 1
        for _ in range(20):
            await users["ops"].ListResources(pb.ListResourcesRequest())  # admins are not rate-limited
        await asyncio.sleep(1.5)
        assert len((await alice.ListResources(pb.ListResourcesRequest())).resources) == 1, "the bucket refills"


async def test_open_streams_are_capped_per_client() -> None:
    async with daemon_with({"streams_per_client": 3}, delay=60) as (_, users):
        alice, bob = users["alice"], users["bob"]
        running_task = await alice.StartTask(start_request())
        watches = [alice.WatchTask(pb.WatchTaskRequest(task_id=running_task.id)) for _ in range(3)]
        for watch in watches:
            await watch.read()  # the stream is open on the daemon; it is not read further
        extra = alice.WatchTask(pb.WatchTaskRequest(task_id=running_task.id))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await extra.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "you have 3 streams open, the per-client limit" in (refused.value.details() or "")
        bobs = await bob.StartTask(start_request())
        other = bob.WatchTask(pb.WatchTaskRequest(task_id=bobs.id))
        assert (await other.read()).id == bobs.id, "another client's streams are not affected"
        other.cancel()
        watches[0].cancel()
        for _ in range(100):  # the daemon sees the cancellation asynchronously
            again = alice.WatchTask(pb.WatchTaskRequest(task_id=running_task.id))
            try:
                assert (await again.read()).id == running_task.id
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
        else:
            pytest.fail("closing a stream did not free its place")
        for watch in [*watches, again]:
            watch.cancel()


async def test_overlong_text_fields_are_refused() -> None:
    async with daemon_with({"max_field_chars": 64}) as (_, users):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await users["alice"].GetTask(pb.GetTaskRequest(task_id="x" * 65))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "task_id is 65 characters long; the limit is 64"
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await users["alice"].GetTask(pb.GetTaskRequest(task_id="x" * 64))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


BIG_RESULT_DAEMON = """
import os, sys
from qrmid.backends import noop
from qrmid.backends.base import Output
from qrmid.cli import main

BIG = os.urandom(int(os.environ["RESULT_BYTES"]))


async def output(self, ref):
    return Output(data=BIG)


noop.Noop.output = output
sys.argv = ["qrmid", "serve", "--config", sys.argv[1]]
main()
"""


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


async def test_never_read_result_streams_keep_the_daemon_bounded() -> None:
    """30 streams of a 64 MiB result, opened and never read: gRPC flow control holds back what the daemon
    buffers to a few result chunks per stream, far below the 1.9 GiB it would take to queue every result in
    full, while another client still gets the whole result. The daemon is a real ``qrmid serve`` process whose noop backend returns a large
    result (the one stand-in: no local backend produces 16 MiB cheaply)."""
    streams, size = 30, 64 << 20
    per_stream = 12 * RESULT_CHUNK_BYTES
    assert per_stream <= size / 5
    scratch = short_dir()
    socket = scratch / "qrmid.sock"
    cfg = scratch / "qrmid.toml"
    cfg.write_text(f'[daemon]\nsocket = "{socket}"\n'
                   f'[journal]\npath = "{scratch / "journal.db"}"\n'
                   '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 1\n')
    daemon = await asyncio.to_thread(subprocess.Popen, [sys.executable, "-c", BIG_RESULT_DAEMON, str(cfg)],
                                     env={**os.environ, "RESULT_BYTES": str(size)})
    address = f"unix:{socket}"
    hoarder = grpc.aio.insecure_channel(address, options=[("grpc.http2.bdp_probe", 0)])
    other = grpc.aio.insecure_channel(address)
    try:
        await asyncio.to_thread(wait_serving, address, process=daemon)
        stub, other_stub = pb_grpc.QuantumResourcesStub(hoarder), pb_grpc.QuantumResourcesStub(other)
        task = await stub.StartTask(start_request())
        async for view in stub.WatchTask(pb.WatchTaskRequest(task_id=task.id)):
            final = view.state
        assert final == pb.TASK_STATE_COMPLETED
        before = rss_bytes(daemon.pid)
        hoarded = [stub.GetTaskResult(pb.GetTaskResultRequest(task_id=task.id)) for _ in range(streams)]
        for call in hoarded:
            assert (await call.read()).total_size == size  # opened and started; never read further
        received = bytearray()
        async for chunk in other_stub.GetTaskResult(pb.GetTaskResultRequest(task_id=task.id)):
            received += chunk.data
        assert len(received) == size
        assert len((await other_stub.ListResources(pb.ListResourcesRequest())).resources) == 1
        grown = rss_bytes(daemon.pid) - before
        print(f"{streams} unread streams of a {size >> 20} MiB result: the daemon grew {grown / 2**20:.0f} MiB, "
              f"{grown / streams / 2**20:.1f} MiB a stream, {grown / (streams * size):.2f} of queueing them in full")
        assert grown < streams * per_stream
        for call in hoarded:
            call.cancel()
    finally:
        await hoarder.close()
        await other.close()
        daemon.send_signal(signal.SIGTERM)
        await asyncio.to_thread(daemon.wait, 60)
