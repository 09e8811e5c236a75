"""The systemd unit is valid and hardened, and the daemon keeps its watchdog fed from its event loop."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import ROOT, short_dir, subprocess_daemon

UNIT = ROOT / "systemd" / "qrmid.service"
INSTALLED = "/opt/qrmid/bin/qrmid"  # where the README installs qrmid for the service


def test_unit_verifies_without_complaint(tmp_path: Path) -> None:
    """``systemd-analyze verify`` prints nothing, given the unit's qrmid (here: the one under test)."""
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} serve" in text
    qrmid = shutil.which("qrmid", path=str(Path(sys.executable).parent))
    assert qrmid, "qrmid is installed next to this Python"
    copy = tmp_path / "qrmid.service"
    copy.write_text(text.replace(INSTALLED, qrmid))
    run = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                         check=False)
    assert run.stderr == "" and run.returncode == 0


def test_unit_is_a_notify_service_with_a_runtime_directory() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "RuntimeDirectory=qrmid", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line


def test_unit_exposure_score_is_low() -> None:
    run = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True,
                         text=True, check=False)
    score = float(re.search(r"Overall exposure level for qrmid.service: ([0-9.]+)", run.stdout).group(1))
    assert score <= 3.0, run.stdout


NOOP = '[[resources]]\ntype = "noop"\nname = "fast"\n'
PING = b"WATCHDOG=1"


def test_unit_asks_for_a_watchdog() -> None:
    assert re.search(r"^WatchdogSec=\d+", UNIT.read_text(), re.MULTILINE)


def test_unit_leaves_room_for_many_connections() -> None:
    """The usual soft limit of 1,024 descriptors let idle connections lock every caller out."""
    limit = re.search(r"^LimitNOFILE=(\d+)$", UNIT.read_text(), re.MULTILINE)
    assert limit and int(limit.group(1)) >= 65536


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound Unix datagram socket standing in for systemd's notify socket."""
    path = str(short_dir() / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield sock, path


def receive_until(sock: socket.socket, wanted: bytes, count: int = 1, timeout: float = 30.0) -> list[bytes]:
    """Datagrams until ``count`` of them contain ``wanted``."""
    sock.settimeout(timeout)
    seen: list[bytes] = []
    while sum(wanted in message for message in seen) < count:
        seen.append(sock.recv(4096))
    return seen


def drain(sock: socket.socket) -> None:
    sock.settimeout(0.5)
    with contextlib.suppress(TimeoutError):
        while True:
            sock.recv(4096)


def test_watchdog_pings_stop_while_the_daemon_is_stopped_and_resume(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}  # a ping every 0.1 s
    with subprocess_daemon(NOOP, env=env) as (_, process):
        assert b"READY=1" in receive_until(sock, b"READY=1")[-1]
        assert receive_until(sock, PING, count=3)[-1] == PING
        process.send_signal(signal.SIGSTOP)
        try:
            drain(sock)  # pings sent before it stopped
            sock.settimeout(1.0)  # ten intervals
            with pytest.raises(TimeoutError):
                sock.recv(4096)
        finally:
            process.send_signal(signal.SIGCONT)
        assert receive_until(sock, PING)[-1] == PING


def test_no_watchdog_pings_when_the_watchdog_is_for_another_process(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    with subprocess_daemon(NOOP, env=env):
        receive_until(sock, b"READY=1")
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
