"""``qrmid serve`` in its own process: started and timed to SERVING, killed with SIGKILL, restarted, stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qrmid.client_health import wait_serving


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
