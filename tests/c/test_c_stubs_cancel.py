"""qrmid_client_cancel: another thread ends an exclusive Acquire waiting in line on a live daemon, the daemon drops
it from the line, and the cancelled client's later calls end CANCELLED without reaching the daemon."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cstubs_support import pkg_config
from daemons import subprocess_daemon

from qrmid.client import Client

CONFIG = '[[resources]]\ntype = "noop"\nname = "held-qpu"\n'


@pytest.fixture(scope="module")
def cancel_probe(c_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/c/qrmid_cancel_probe.c built against the installed library."""
    out = tmp_path_factory.mktemp("c-cancel") / "qrmid_cancel_probe"
    proc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-pthread", "-o", str(out),
                           str(Path(__file__).parent / "qrmid_cancel_probe.c"),
                           *pkg_config(c_prefix, "--cflags", "--libs"), f"-Wl,-rpath,{c_prefix / 'lib'}"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def address() -> Iterator[str]:
    with subprocess_daemon(CONFIG) as (address, _):
        yield address


def waiting(client: Client) -> int:
    return client.resource("held-qpu").exclusive_waiting


def test_a_cancelled_client_leaves_the_line_and_makes_no_more_calls(cancel_probe: Path, address: str) -> None:
    probe = subprocess.Popen([str(cancel_probe), address, "held-qpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert probe.stdin is not None and probe.stdout is not None
    try:
        held = probe.stdout.readline().strip()
        assert held.startswith("held: OK "), held
        with Client(address) as client:
            deadline = time.monotonic() + 30
            while waiting(client) != 1:
                assert time.monotonic() < deadline, "the second Acquire never joined the line"
                time.sleep(0.1)
            probe.stdin.write("go\n")
            probe.stdin.flush()
            assert probe.stdout.readline().strip() == "waiting: CANCELLED: cancelled by the caller"
            assert probe.stdout.readline().strip() == "after: CANCELLED: /qrmid.v1.QuantumResources/Acquire: cancelled by the caller"
            deadline = time.monotonic() + 30
            while waiting(client) != 0:
                assert time.monotonic() < deadline, "the daemon kept the cancelled Acquire in line"
                time.sleep(0.1)
            assert client.resource("held-qpu").exclusive_lease.id == held.removeprefix("held: OK "), \
                "the line was left while the resource was still held: the wait was cut short, not granted"
        probe.stdin.close()
        assert probe.stdout.readline().strip() == "released: OK"
        assert probe.wait(timeout=60) == 0
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
