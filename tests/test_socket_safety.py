"""Whose socket it is, with real users: a daemon refuses a socket directory another user made or can write, and
clients (Python, CLI) send nothing, neither credential nor payload, to a socket that is not the expected owner's.

An impostor (tests/impostor.py) runs as another user where the client is pointed and records every byte it receives;
the same client told to expect that user sends it the bearer token, which shows the recording would have caught it."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemons import ROOT, short_dir, subprocess_daemon, wait_serving
from impostor import Impostor
from impostor import impostor as impostor_of
from system_users import system_users
from user_python import UserPython, user_python

from qrmid.client import Client
from qrmid.client_auth import ClientAuth

ALICE, MALLORY = "qrmid-sock-alice", "qrmid-sock-mallory"
TOKEN = "socket-check-bearer-token-0123456789"

@pytest.fixture(scope="module")
def users() -> Iterator[tuple[str, ...]]:
    if os.geteuid() != 0:
        pytest.fail("the socket tests create users and run processes as them: run them as root")
    with system_users((ALICE, MALLORY)) as names:
        yield names


@pytest.fixture(scope="module")
def python() -> Iterator[UserPython]:
    with user_python() as found:
        yield found


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def shared_tmp() -> Path:
    """A fresh directory like /tmp: world-writable and sticky."""
    tmp = short_dir()
    tmp.chmod(0o1777)
    return tmp


def serve_as(python: UserPython, user: str, tmp: Path) -> subprocess.Popen[str]:
    """``qrmid serve`` as ``user`` on its default socket, with ``tmp`` as its temporary directory."""
    config = tmp / "qrmid.toml"
    config.write_text('[journal]\nenabled = false\n[[resources]]\ntype = "noop"\nname = "noop"\n')
    config.chmod(0o644)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("XDG_", "QRMID_"))}
    return subprocess.Popen([python.executable, "-m", "qrmid", "serve", "--config", str(config)], user=user,
                            group=user, extra_groups=[], cwd="/", env=python.env({**env, "TMPDIR": str(tmp)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=60)


def refused_start(python: UserPython, owner: str) -> tuple[Path, str]:
    """ALICE's daemon started after ``owner`` made the directory of her default socket (without XDG_RUNTIME_DIR),
    open to all: that directory, and what the daemon said as it exited with an error."""
    tmp = shared_tmp()
    made = tmp / f"qrmid-{uid(ALICE)}"
    made.mkdir()
    os.chown(made, uid(owner), uid(owner))
    made.chmod(0o777)
    daemon = serve_as(python, ALICE, tmp)
    try:
        _, err = daemon.communicate(timeout=120)
    finally:
        stop(daemon)
    assert daemon.returncode != 0
    return made, err


def test_the_daemon_refuses_a_socket_directory_another_user_made(users: tuple[str, ...], python: UserPython) -> None:
    planted, err = refused_start(python, MALLORY)
    assert f"refusing to serve on {planted}/qrmid/qrmid.sock" in err
    assert f"{planted} belongs to {MALLORY} (uid {uid(MALLORY)}) (mode 0777)" in err
    assert "remove it" in err
    assert list(planted.iterdir()) == [], "nothing was made in the planted directory"


def test_the_daemon_refuses_its_own_directory_when_others_can_write_it(users: tuple[str, ...], python: UserPython) -> None:
    loose, err = refused_start(python, ALICE)
    assert f"{loose} (owner {ALICE} (uid {uid(ALICE)}), mode 0777) is writable by group or other users" in err
    assert f"run: chmod go-w {loose}" in err


def test_the_default_directory_is_private_and_clients_expect_its_owner(users: tuple[str, ...], python: UserPython) -> None:
    tmp = shared_tmp()
    daemon = serve_as(python, ALICE, tmp)
    socket = tmp / f"qrmid-{uid(ALICE)}" / "qrmid" / "qrmid.sock"
    try:
        wait_serving(f"unix:{socket}", process=daemon)  # a raw gRPC channel: no owner check
        for directory in (socket.parent.parent, socket.parent):
            info = directory.stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid(ALICE), 0o700), directory
        with Client(f"unix:{socket}", auth=ClientAuth.resolve(socket_owner=ALICE)) as client:
            assert [r.name for r in client.list_resources()] == ["noop"]
        with Client(f"unix:{socket}", auth=ClientAuth.resolve()) as client, \
                pytest.raises(grpc.RpcError) as refused:
            client.list_resources()  # root's client expects root's own daemon here
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"belongs to {ALICE} (uid {uid(ALICE)}) (mode 0700), not to root (uid 0)" in refused.value.details()
        assert f"set QRMID_SOCKET_OWNER={ALICE}" in refused.value.details()
    finally:
        stop(daemon)


@pytest.fixture
def impostor(users: tuple[str, ...]) -> Iterator[Impostor]:
    with impostor_of(MALLORY) as found:
        yield found


def token_file() -> Path:
    path = short_dir() / "token"
    path.write_text(TOKEN)
    path.chmod(0o600)
    return path


def test_a_client_sends_nothing_to_another_users_socket(impostor: Impostor) -> None:
    with Client(f"unix:{impostor.socket}", timeout=5, auth=ClientAuth.resolve("token", token_file=token_file())) \
            as client, pytest.raises(grpc.RpcError) as refused:
        client.list_resources()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    details = refused.value.details()
    assert f"not connecting to {impostor.socket}" in details and "nothing was sent" in details
    assert f"{impostor.socket.parent} belongs to {MALLORY}" in details
    time.sleep(1)  # what a connection would have delivered by now
    assert impostor.bytes() == b"", "not even a connection reached the impostor"

    trusting = ClientAuth.resolve("token", token_file=token_file(), socket_owner=MALLORY)
    with Client(f"unix:{impostor.socket}", timeout=5, auth=trusting) as client, pytest.raises(grpc.RpcError):
        client.list_resources()  # told to trust MALLORY: the call goes out (and fails, this is no daemon)
    assert TOKEN.encode() in impostor.bytes(), "the recording catches a token that is sent"


def test_the_cli_sends_nothing_to_another_users_socket(impostor: Impostor) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QRMID_")}
    run = subprocess.run([sys.executable, "-m", "qrmid", "--address", f"unix:{impostor.socket}", "--auth", "token",
                          "--token-file", str(token_file()), "resources"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode != 0
    assert f"UNAVAILABLE: not connecting to {impostor.socket}" in run.stderr
    assert impostor.bytes() == b""


def test_another_users_socket_in_a_safe_directory_is_refused(impostor: Impostor) -> None:
    safe = short_dir()
    safe.chmod(0o755)
    moved = safe / "qrmid.sock"
    impostor.socket.rename(moved)  # still MALLORY's listening socket, now where only root could have put it
    with Client(f"unix:{moved}", timeout=5, auth=ClientAuth.resolve("token", token_file=token_file())) as client, \
            pytest.raises(grpc.RpcError) as refused:
        client.list_resources()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"socket {moved} belongs to {MALLORY} (uid {uid(MALLORY)}), not to root (uid 0)" in refused.value.details()
    assert f"set QRMID_SOCKET_OWNER={MALLORY}" in refused.value.details()
    assert impostor.bytes() == b""


def test_a_socket_swapped_after_calls_went_through_is_refused(impostor: Impostor) -> None:
    """A client remembers the socket that passed its check; a different file at the path is checked afresh."""
    with subprocess_daemon('[[resources]]\ntype = "noop"\nname = "noop"\n') as (address, _), \
            Client(address, timeout=5, auth=ClientAuth.resolve("token", token_file=token_file())) as client:
        assert [r.name for r in client.list_resources()] == ["noop"]
        impostor.socket.rename(address.removeprefix("unix:"))  # MALLORY's socket where the daemon's was
        with pytest.raises(grpc.RpcError) as refused:
            client.list_resources()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"belongs to {MALLORY}" in refused.value.details()
    assert impostor.bytes() == b""
