"""qrmid as a real process: start-up checks, systemd notification, graceful SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from daemons import ROOT, short_dir, subprocess_daemon, wait_serving

from qrmid.client import Client, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.v1 import quantum_resources_pb2 as pb

SLOW_NOOP = '[[resources]]\ntype = "noop"\nname = "slow"\nslots = 1\ndelay_seconds = 1.5\n'


class NotifyListener:
    """A stand-in for systemd's notification socket: collects every datagram sent to it."""

    def __init__(self) -> None:
        self.path = short_dir() / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        while True:
            self.messages.append(self.sock.recv(4096).decode())


def test_sigterm_lets_a_running_task_finish_and_exits_zero() -> None:
    """Without a journal, a stop cancels what is queued: nothing would take it back."""
    notify = NotifyListener()
    config = SLOW_NOOP + "[journal]\nenabled = false\n"
    with subprocess_daemon(config, env={"NOTIFY_SOCKET": str(notify.path)}) as (address, process):
        with Client(address) as qrmid:
            running = qrmid.start_task("slow", pulser_payload({}, 1))
            queued = qrmid.start_task("slow", pulser_payload({}, 1))
            watcher = qrmid.watch(running.id)
            assert next(watcher).state == pb.TASK_STATE_QUEUED
            assert next(watcher).state == pb.TASK_STATE_RUNNING
            queued_watcher = qrmid.watch(queued.id)
            assert next(queued_watcher).state == pb.TASK_STATE_QUEUED
            process.send_signal(signal.SIGTERM)
            cancelled = next(queued_watcher)
            assert (cancelled.state, cancelled.reason) == (pb.TASK_STATE_CANCELLED, "the daemon shut down")
            with pytest.raises(grpc.RpcError) as refused:
                qrmid.start_task("slow", pulser_payload({}, 1))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert next(watcher).state == pb.TASK_STATE_COMPLETED, "the running task had its grace period"
        assert process.wait(timeout=30) == 0
    assert notify.messages[0].startswith("READY=1")
    assert any(message.startswith("STOPPING=1") for message in notify.messages)


def test_a_restart_with_a_journal_keeps_queued_tasks() -> None:
    config = SLOW_NOOP + f'[journal]\npath = "{short_dir() / "journal.db"}"\n'
    with subprocess_daemon(config) as (address, process):
        with Client(address) as qrmid:
            running = qrmid.start_task("slow", pulser_payload({}, 1))
            queued = qrmid.start_task("slow", pulser_payload({}, 1))
            watcher = qrmid.watch(running.id)
            assert [next(watcher).state for _ in range(2)] == [pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING]
            process.send_signal(signal.SIGTERM)
            assert next(watcher).state == pb.TASK_STATE_COMPLETED, "the running task had its grace period"
        assert process.wait(timeout=30) == 0
    with subprocess_daemon(config) as (address, _), Client(address) as qrmid:
        assert qrmid.task(running.id).state == pb.TASK_STATE_COMPLETED
        assert qrmid.wait(queued.id).state == pb.TASK_STATE_COMPLETED, "the queued task was kept and ran"


def test_stale_socket_is_replaced_but_a_live_daemon_is_not() -> None:
    with subprocess_daemon(SLOW_NOOP) as (address, _):
        path = address.removeprefix("unix:")
        config = short_dir() / "second.toml"
        config.write_text(f'[daemon]\nsocket = "{path}"\n{SLOW_NOOP}')
        second = subprocess.run([sys.executable, "-m", "qrmid", "serve", "--config", str(config),
                                 "--journal", str(config.with_suffix(".db"))],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert f"another daemon is already serving on {path}" in second.stderr
    stale = short_dir() / "qrmid.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(stale))
    leftover.close()  # a socket file nobody listens on, as a killed daemon leaves behind
    with subprocess_daemon(SLOW_NOOP.replace("slow", "fresh")) as (address, _), Client(address) as qrmid:
        assert [r.name for r in qrmid.list_resources()] == ["fresh"]


def test_a_too_long_socket_path_is_refused_clearly() -> None:
    path = short_dir() / ("x" * 120) / "qrmid.sock"
    run = subprocess.run([sys.executable, "-m", "qrmid", "serve", "--socket", str(path),
                          "--journal", str(short_dir() / "journal.db")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "longer than the 107 bytes Unix sockets allow" in run.stderr


def test_tcp_listener() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scratch = short_dir()  # TCP needs authentication: a service token here
    tokens, token = scratch / "tokens.toml", scratch / "token"
    tokens.write_text('[[token]]\nname = "svc"\ntoken = "0123456789abcdef0123"\n')
    token.write_text("0123456789abcdef0123\n")
    tokens.chmod(0o600)
    text = f'tcp = "127.0.0.1:{port}"\ntcp_auth = "token"\n[auth]\ntokens_file = "{tokens}"\n{SLOW_NOOP}'
    with subprocess_daemon(text), Client(f"127.0.0.1:{port}", auth=ClientAuth.resolve("token", token_file=token)) \
            as qrmid:
        assert [r.name for r in qrmid.list_resources()] == ["slow"]


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def idle_connection(path: str) -> socket.socket:
    """A connection that does the HTTP/2 handshake (preface, SETTINGS, ack) and nothing else: no call, no
    credential."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    conn.sendall(H2_PREFACE + H2_SETTINGS + H2_SETTINGS_ACK)
    return conn


def closed_by_peer(conn: socket.socket, deadline: float) -> bool:
    """True once the peer closes ``conn`` (what it sent before, its SETTINGS and GOAWAY, is read and dropped)."""
    conn.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        while conn.recv(65536):
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
    except (TimeoutError, ConnectionResetError) as exc:
        return isinstance(exc, ConnectionResetError)
    return True


def test_idle_connections_lock_nobody_out_and_are_closed() -> None:
    """1,100 connections that only shake hands, against a daemon whose soft open files limit is 1,024 (the
    usual default): it raises the limit to the hard one and serves a normal client meanwhile, then closes the
    idle connections."""
    scratch = short_dir()
    path = scratch / "qrmid.sock"
    cfg = scratch / "qrmid.toml"
    cfg.write_text(f'[daemon]\nsocket = "{path}"\nidle_connection_seconds = 2\n[journal]\nenabled = false\n'
                   + SLOW_NOOP.replace("delay_seconds = 1.5", "delay_seconds = 0"))
    process = subprocess.Popen(["prlimit", "--nofile=1024:4096", sys.executable, "-m", "qrmid", "serve", "--config",
                                str(cfg)], cwd=ROOT)
    idle: list[socket.socket] = []
    try:
        wait_serving(f"unix:{path}", process=process)
        idle = [idle_connection(str(path)) for _ in range(1100)]
        with Client(f"unix:{path}", timeout=30) as qrmid:
            assert [r.name for r in qrmid.list_resources()] == ["slow"], "served while 1,100 connections idle"
        deadline = time.monotonic() + 60
        still_open = [conn for conn in idle if not closed_by_peer(conn, deadline)]
        assert not still_open, f"{len(still_open)} of {len(idle)} idle connections still open"
        assert process.poll() is None
    finally:
        for conn in idle:
            conn.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def test_two_daemons_started_at_once_on_one_socket() -> None:
    """Both pass the "already serving" probe only if nothing orders them: the socket's lock lets exactly one bind
    it; the other exits clearly and, exiting, leaves the survivor's socket in place."""
    scratch = short_dir()
    path = scratch / "qrmid.sock"
    processes = []
    for name in ("first", "second"):
        cfg = scratch / f"{name}.toml"
        cfg.write_text(f'[daemon]\nsocket = "{path}"\n[journal]\npath = "{scratch / name}.db"\n'
                       f'[[resources]]\ntype = "noop"\nname = "{name}"\n')
        processes.append(subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(cfg)], cwd=ROOT,
                                          stderr=subprocess.PIPE, text=True))
    try:
        wait_serving(f"unix:{path}")
        finished = [process for process in processes if process.poll() is not None]
        deadline = time.monotonic() + 120
        while not finished and time.monotonic() < deadline:
            time.sleep(0.1)
            finished = [process for process in processes if process.poll() is not None]
        assert len(finished) == 1, "exactly one daemon gives up"
        loser = finished[0]
        assert loser.returncode != 0
        assert f"another daemon is already serving on {path}" in loser.communicate()[1]
        survivor = "second" if loser is processes[0] else "first"
        assert path.exists(), "the loser left the survivor's socket alone"
        with Client(f"unix:{path}") as qrmid:
            assert [r.name for r in qrmid.list_resources()] == [survivor]
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=60) == 0


def test_with_no_headroom_connections_are_capped_and_the_daemon_keeps_its_descriptors() -> None:
    """With no headroom in the open files limit (300, soft and hard), max_connections is lowered so that the
    daemon keeps 256 descriptors of its own: 100 idle connections are all closed (past the cap at once, the rest
    once idle) instead of exhausting them, and the daemon goes on journaling and running tasks."""
    scratch = short_dir()
    path = scratch / "qrmid.sock"
    cfg = scratch / "qrmid.toml"
    cfg.write_text(f'[daemon]\nsocket = "{path}"\nidle_connection_seconds = 2\n[journal]\npath = "{scratch}/j.db"\n'
                   '[[resources]]\ntype = "noop"\nname = "fast"\n')
    process = subprocess.Popen(["prlimit", "--nofile=300:300", sys.executable, "-m", "qrmid", "serve", "--config",
                                str(cfg)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    idle: list[socket.socket] = []
    try:
        wait_serving(f"unix:{path}", process=process)
        idle = [idle_connection(str(path)) for _ in range(100)]
        deadline = time.monotonic() + 60
        assert all(closed_by_peer(conn, deadline) for conn in idle), "every idle connection is closed"
        with Client(f"unix:{path}", timeout=30) as qrmid:
            assert [r.name for r in qrmid.list_resources()] == ["fast"]
            assert qrmid.wait(qrmid.start_task("fast", pulser_payload({}, 1)).id, timeout=60).state == \
                pb.TASK_STATE_COMPLETED, "the journal and the backend still get descriptors"
    finally:
        for conn in idle:
            conn.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert "max_connections lowered from 10000 to 44 per listener" in process.communicate()[1]


def test_a_stopping_daemon_leaves_a_socket_that_is_not_its_own() -> None:
    with subprocess_daemon(SLOW_NOOP) as (address, process):
        path = Path(address.removeprefix("unix:"))
        other = socket.socket(socket.AF_UNIX)
        other.bind(str(path.with_name("other.sock")))
        path.with_name("other.sock").rename(path)  # someone else's socket where the daemon's was
        others = path.stat().st_ino
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert path.exists() and path.stat().st_ino == others
    other.close()


def server_settings(conn: socket.socket) -> dict[int, int]:
    """The SETTINGS the server sends first on ``conn``, by identifier."""
    conn.settimeout(30)
    data = b""
    while len(data) < 9 or len(data) < 9 + int.from_bytes(data[:3], "big"):
        data += conn.recv(65536)
    length, kind = int.from_bytes(data[:3], "big"), data[3]
    assert kind == 4, "a server opens with SETTINGS"
    payload = data[9:9 + length]
    return {int.from_bytes(payload[i:i + 2], "big"): int.from_bytes(payload[i + 2:i + 6], "big")
            for i in range(0, length, 6)}


def test_each_connection_carries_a_bounded_number_of_calls() -> None:
    """max_streams_per_connection is what the daemon advertises as SETTINGS_MAX_CONCURRENT_STREAMS (0x3)."""
    with subprocess_daemon(f"max_streams_per_connection = 32\n{SLOW_NOOP}") as (address, _), \
            idle_connection(address.removeprefix("unix:")) as conn:
        assert server_settings(conn)[0x3] == 32
