"""Benchmark of the RPC metrics interceptor, run by hand: ``python -m qrmid.bench.telemetry``.

Three echo servers in their own processes on Unix sockets: bare (the baseline), with a pass-through
interceptor (standing in for the daemon's authentication interceptor), and with that plus ``RpcTelemetry``
feeding a Prometheus histogram as the daemon does. One caller alternates rounds between them; the latency of each
is printed as min–median–max of the rounds, with the ratio of its median to the baseline's of the same run.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram

from qrmid.api.telemetry import RpcTelemetry
from qrmid.bench.timing import spread
from qrmid.ops.metrics import RPC_BUCKETS

ECHO = "/bench.Echo/Echo"
ROUNDS = 10
CALLS = 500


KINDS = ("bare", "passthrough", "timed")


class _PassThrough(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        return await continuation(details)


async def _serve(socket: str, kind: str) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    interceptors: list[grpc.aio.ServerInterceptor] = [] if kind == "bare" else [_PassThrough()]
    if kind == "timed":
        histogram = Histogram("rpc_seconds", "", ["method", "code"], buckets=RPC_BUCKETS,
                              registry=CollectorRegistry())
        interceptors.insert(0, RpcTelemetry(lambda method, code, s: histogram.labels(method, code).observe(s)))
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    await server.wait_for_termination()


async def _round(channel: grpc.aio.Channel) -> float:
    call = channel.unary_unary(ECHO)
    start = time.perf_counter()
    for _ in range(CALLS):
        await call(b"x" * 64)
    return (time.perf_counter() - start) / CALLS


async def _measure(sockets: dict[str, Path]) -> dict[str, list[float]]:
    channels = {kind: grpc.aio.insecure_channel(f"unix:{path}") for kind, path in sockets.items()}
    try:
        for channel in channels.values():
            await _round(channel)  # warm up
        means: dict[str, list[float]] = {kind: [] for kind in channels}
        for _ in range(ROUNDS):
            for kind, channel in channels.items():
                means[kind].append(await _round(channel))
        return means
    finally:
        for channel in channels.values():
            await channel.close()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        asyncio.run(_serve(sys.argv[2], sys.argv[3]))
        return
    with tempfile.TemporaryDirectory(prefix="qb") as scratch:
        sockets = {kind: Path(scratch) / f"{kind}.sock" for kind in KINDS}
        servers = [subprocess.Popen([sys.executable, "-m", "qrmid.bench.telemetry", "--serve", str(path), kind])
                   for kind, path in sockets.items()]
        try:
            while not all(path.exists() for path in sockets.values()):
                time.sleep(0.05)
            means = asyncio.run(_measure(sockets))
        finally:
            for server in servers:
                server.terminate()
                server.wait()
    medians = {kind: statistics.median(values) for kind, values in means.items()}
    print(f"unary echo, {ROUNDS} rounds of {CALLS} calls: min–median–max of the round means, ratio of the medians")
    for kind, label in zip(KINDS, ("bare gRPC server", "+ pass-through interceptor", "+ RpcTelemetry"), strict=True):
        print(f"  {label:28} {spread(means[kind], 'us/call', 1e6, 1):>28}  {medians[kind] / medians['bare']:.2f}x")


if __name__ == "__main__":
    main()
