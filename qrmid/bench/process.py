"""``qrmid serve`` in its own process: started and timed to SERVING, killed with SIGKILL, restarted, stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


class QrmidProcess:
    """One ``qrmid serve --config`` process on a config whose daemon listens on ``socket``; restartable. With
    ``output``, what it prints goes to that file, appended across runs."""

    def __init__(self, config: Path, socket: Path, cwd: Path | None = None, output: Path | None = None) -> None:
        self.config = config
        self.socket = socket
        self.cwd = cwd
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    def start(self, timeout: float = 120.0) -> float:
        """Start it; seconds from exec until it answers its health check with SERVING."""
        started = time.perf_counter()
        with self.output.open("ab") if self.output else contextlib.nullcontext() as sink:  # the child has its own
            self.process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(self.config)],
                                            cwd=self.cwd, stdout=sink, stderr=sink)
        wait_serving(self.address, timeout, self.process)
        return time.perf_counter() - started

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
