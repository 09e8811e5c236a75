"""The C runtime authenticates like the Python client: a fresh MUNGE credential on every call (unary and
streaming), or a bearer token, configured from QRMID_AUTH; against a real daemon and a real munged."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cstubs_support import VALGRIND_ARGS, pkg_config
from daemons import short_dir, subprocess_daemon
from impostor import impostor
from munged import munged
from system_users import system_users

TOKEN = "c-stubs-service-token-0123456789"
MALLORY = "qrmid-sock-mallory"


@pytest.fixture(scope="module")
def auth_probe(c_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("c-auth") / "qrmid_auth_probe"
    cmd = ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-o", str(out),
           str(Path(__file__).parent / "qrmid_auth_probe.c"), *pkg_config(c_prefix, "--cflags", "--libs"),
           f"-Wl,-rpath,{c_prefix / 'lib'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def munge_daemon() -> Iterator[tuple[str, Path]]:
    """A qrmid requiring MUNGE on its socket, and the munged socket it checks credentials with."""
    with munged() as socket, subprocess_daemon(
            f'auth = "munge"\n[auth]\nmunge_socket = "{socket}"\n'
            '[[resources]]\ntype = "noop"\nname = "noop"\n') as (address, _):
        yield address, socket


def probe(binary: Path, address: str, env: dict[str, str], *wrapper: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QRMID_")}
    proc = subprocess.run([*wrapper, str(binary), address], capture_output=True, text=True, timeout=300,
                          env={**base, **env}, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    steps: dict[str, str] = {}
    for row in proc.stdout.splitlines():
        name, status = row.split(" ", 2)[:2]
        steps[name] = steps.get(name, "") + ("," if name in steps else "") + status
    return steps


def test_a_fresh_munge_credential_on_every_call(auth_probe: Path, munge_daemon: tuple[str, Path]) -> None:
    address, socket = munge_daemon
    steps = probe(auth_probe, address, {"QRMID_AUTH": "munge", "QRMID_MUNGE_SOCKET": str(socket)})
    assert steps == {"auth": "OK", "list": "OK,OK", "stream": "NOT_FOUND"}, steps


def test_without_a_credential_calls_are_unauthenticated(auth_probe: Path, munge_daemon: tuple[str, Path]) -> None:
    steps = probe(auth_probe, munge_daemon[0], {})
    assert steps == {"auth": "OK", "list": "UNAUTHENTICATED,UNAUTHENTICATED", "stream": "UNAUTHENTICATED"}, steps


def test_munged_unreachable_fails_locally_as_unavailable(auth_probe: Path, munge_daemon: tuple[str, Path]) -> None:
    steps = probe(auth_probe, munge_daemon[0], {"QRMID_AUTH": "munge",
                                                "QRMID_MUNGE_SOCKET": str(short_dir() / "absent.socket")})
    assert steps == {"auth": "OK", "list": "UNAVAILABLE,UNAVAILABLE", "stream": "UNAVAILABLE"}, steps


def test_munge_calls_under_valgrind(auth_probe: Path, munge_daemon: tuple[str, Path]) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is missing: apt-get install valgrind")
    address, socket = munge_daemon
    steps = probe(auth_probe, address, {"QRMID_AUTH": "munge", "QRMID_MUNGE_SOCKET": str(socket)},
                  "valgrind", *VALGRIND_ARGS)
    assert steps == {"auth": "OK", "list": "OK,OK", "stream": "NOT_FOUND"}, steps


def test_bearer_token_from_a_file(auth_probe: Path) -> None:
    d = short_dir()
    tokens, token = d / "tokens.toml", d / "token"
    tokens.write_text(f'[[token]]\nname = "c-service"\ntoken = "{TOKEN}"\n')
    tokens.chmod(0o600)
    token.write_text(TOKEN + "\n")
    with subprocess_daemon(f'auth = "token"\n[auth]\ntokens_file = "{tokens}"\n'
                           '[[resources]]\ntype = "noop"\nname = "noop"\n') as (address, _):
        good = probe(auth_probe, address, {"QRMID_AUTH": "token", "QRMID_TOKEN_FILE": str(token)})
        token.write_text("not-the-token\n")
        bad = probe(auth_probe, address, {"QRMID_AUTH": "token", "QRMID_TOKEN_FILE": str(token)})
    assert good == {"auth": "OK", "list": "OK,OK", "stream": "NOT_FOUND"}, good
    assert bad == {"auth": "OK", "list": "UNAUTHENTICATED,UNAUTHENTICATED", "stream": "UNAUTHENTICATED"}, bad


def test_nothing_is_sent_to_another_users_socket(auth_probe: Path) -> None:
    """The runtime checks the socket's owner before every call, as the Python client does (tests/impostor.py)."""
    token = short_dir() / "token"
    token.write_text(TOKEN + "\n")
    env = {"QRMID_AUTH": "token", "QRMID_TOKEN_FILE": str(token)}
    with system_users((MALLORY,)), impostor(MALLORY) as fake:
        base = {k: v for k, v in os.environ.items() if not k.startswith("QRMID_")}
        run = subprocess.run([str(auth_probe), f"unix:{fake.socket}"], capture_output=True, text=True, timeout=300,
                             env={**base, **env}, check=False)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert [line.split(" ", 2)[:2] for line in lines] == [["auth", "OK"], ["list", "UNAVAILABLE"],
                                                              ["list", "UNAVAILABLE"], ["stream", "UNAVAILABLE"]]
        assert f"not connecting to {fake.socket}: {fake.socket.parent} belongs to {MALLORY}" in lines[1]
        assert "nothing was sent" in lines[1] and "QRMID_SOCKET_OWNER=" in lines[1]
        assert fake.bytes() == b"", "not even a connection reached the impostor"
        trusting = probe(auth_probe, f"unix:{fake.socket}", {**env, "QRMID_SOCKET_OWNER": MALLORY})
        assert trusting["auth"] == "OK" and "OK" not in trusting["list"]  # told to trust it: sent, and no daemon
        assert TOKEN.encode() in fake.bytes(), "the recording catches a token that is sent"
