"""A real munged for tests: its own key, socket, state and log in a fresh directory, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def munged() -> Iterator[Path]:
    """A running munged; yields its socket path. Fails (never skips) when munge is not installed."""
    missing = [tool for tool in ("munged", "mungekey") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; install with: apt-get install munge libmunge2")
    d = Path(tempfile.mkdtemp(prefix="qm"))
    d.chmod(0o755)  # munged refuses a socket directory others cannot traverse
    subprocess.run(["mungekey", "-c", "-k", str(d / "munge.key")], check=True, capture_output=True)
    socket = d / "munge.socket"
    process = subprocess.Popen(["munged", "-F", f"--key-file={d}/munge.key", f"--socket={socket}",
                                f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                                f"--seed-file={d}/munged.seed"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start: {process.stderr.read() if process.stderr else ''!r}")
            time.sleep(0.05)
        yield socket
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(d, ignore_errors=True)
