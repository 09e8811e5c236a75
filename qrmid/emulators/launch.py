"""Start emulator and S3 server processes on free 127.0.0.1 ports (for tests and benchmarks), and stop them by PID."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LISTENING = re.compile(r"listening on (https?://\S+)")

# Runs moto's S3 (and the rest of AWS) in this subprocess, on a port the OS picks, and announces it.
MOTO_SERVER = """
import logging, signal
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"listening on http://{host}:{port}", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
server.stop()
"""


@dataclass
class Proc:
    """A started server process and the base URL it announced."""

    popen: subprocess.Popen[str]
    url: str

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID, then SIGKILL if it does not exit in time."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def _start(args: list[str], timeout: float, env: dict[str, str] | None = None) -> Proc:
    """Start ``args`` and wait for its ``listening on URL`` line."""
    popen = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=None, text=True, env={**os.environ, **(env or {})}
    )
    assert popen.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(popen.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            line = popen.stdout.readline()
            if not line:
                break
            seen.append(line)
            if match := LISTENING.search(line):
                return Proc(popen, match.group(1))
    finally:
        selector.close()
    Proc(popen, "").stop()
    raise RuntimeError(f"{args} did not announce its port within {timeout} s; output: {''.join(seen)!r}")


def start_emulator(config: Path | None = None, *extra: str, timeout: float = 60.0,
                   module: str = "qrmid.emulators.ibm_quantum_system") -> Proc:
    """An emulator (by default IBM's; ``module="qrmid.emulators.pasqal_cloud"`` for Pasqal's) on a free port."""
    args = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"]
    if config is not None:
        args += ["--config", str(config)]
    return _start([*args, *extra], timeout)


def start_qrmid(config: Path, socket: Path, timeout: float = 120.0) -> Proc:
    """``qrmid serve --config`` once its socket exists; its ``url`` is the gRPC target. A config that names no
    journal gets a private one beside the socket, so that launched daemons never share (or reload) the system's."""
    text = config.read_text()
    if "[journal]" not in text:
        config.write_text(f'{text}\n[journal]\npath = "{socket.parent / "journal.db"}"\n')
    popen = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(config)], text=True)
    proc = Proc(popen, f"unix:{socket}")
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if popen.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"qrmid did not serve on {socket} within {timeout} s")
        time.sleep(0.05)
    return proc


def start_moto(timeout: float = 60.0) -> Proc:
    """A moto server (S3 included) on a free port."""
    return _start([sys.executable, "-c", MOTO_SERVER], timeout)
