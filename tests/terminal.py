"""Commands run under a pseudo-terminal of a given size, as a person at a terminal runs them."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

from daemons import ROOT

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def in_terminal(*args: str, address: str, columns: int = 80, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``qrmid ARGS`` with its stdout on a pseudo-terminal ``columns`` wide (stderr on a pipe); its exit
    status, the text it showed on the terminal (without colours, lines ended by \\n) and its stderr."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {name: value for name, value in os.environ.items() if name not in {"COLUMNS", "LINES", "NO_COLOR"}}
    env.update(QRMID_ADDRESS=address, TERM="xterm-256color")
    process = subprocess.Popen([sys.executable, "-m", "qrmid", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=terminal, stderr=subprocess.PIPE, start_new_session=True)
    os.close(terminal)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 1)[0]:
                try:
                    data = os.read(controller, 1 << 16)
                except OSError:  # EIO: the command closed its side
                    break
                if not data:
                    break
                shown += data
            elif process.poll() is not None:
                break
        _, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    text = ESCAPES.sub("", shown.decode()).replace("\r\n", "\n")
    return process.returncode, text, stderr.decode()
