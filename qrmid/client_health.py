"""Waiting for a daemon to serve: its gRPC health check answering SERVING."""

from __future__ import annotations

import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# gRPC waits 1 s, then 1.6 s more, and so on, before connecting again to a socket that refused it: polled through
# a channel that backs off so, a start would be timed to the next step of that backoff rather than to SERVING
POLL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 5), ("grpc.min_reconnect_backoff_ms", 5),
                ("grpc.max_reconnect_backoff_ms", 5)]


def wait_serving(address: str, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the daemon at ``address`` answers its health check with SERVING (RuntimeError when
    ``process`` exits first, TimeoutError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address, options=POLL_OPTIONS) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"qrmid exited with {process.returncode} before serving")
            if time.monotonic() > deadline:
                raise TimeoutError(f"qrmid at {address} not serving after {timeout} s")
            time.sleep(0.005)
