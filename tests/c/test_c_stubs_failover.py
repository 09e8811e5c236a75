"""The C runtime fails over between the members an address lists: a C program against a live daemon listed after
a missing socket and a refused port, and a member killed with SIGKILL while the same client keeps calling."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from cstubs_support import VALGRIND_ARGS, pkg_config
from daemons import short_dir
from test_c_stubs_live import check_run
from test_client_failover import BELL, member

from qrmid.client import Client, sampler_payload
from qrmid.v1 import quantum_resources_pb2 as pb


def refused_port() -> str:
    """A loopback address nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def run_example(c_build: Path, address: str, *wrapper: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*wrapper, str(c_build / "qrmid_example"), address], capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.mark.slow
def test_example_runs_when_the_first_members_are_down(c_build: Path, daemon: str, tmp_path: Path) -> None:
    proc = run_example(c_build, f"unix:{tmp_path}/none.sock,{refused_port()},{daemon}")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    check_run(proc.stdout)


@pytest.mark.slow
def test_failover_under_valgrind(c_build: Path, daemon: str, tmp_path: Path) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is missing: apt-get install valgrind")
    proc = run_example(c_build, f"{tmp_path}/none.sock,{refused_port()},{daemon}", "valgrind", *VALGRIND_ARGS)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    check_run(proc.stdout)
    assert "ERROR SUMMARY: 0 errors" in proc.stderr


def test_no_member_answering_names_each_fault(c_build: Path, tmp_path: Path) -> None:
    refused = refused_port()
    proc = run_example(c_build, f"unix:{tmp_path}/none.sock,{refused}")
    assert proc.returncode == 1
    assert "ListResources failed: UNAVAILABLE" in proc.stderr, proc.stderr
    assert f"unix:{tmp_path}/none.sock: " in proc.stderr and f"{refused}: " in proc.stderr, proc.stderr


def test_an_empty_member_is_refused(c_build: Path, tmp_path: Path) -> None:
    proc = run_example(c_build, f"unix:{tmp_path}/a.sock,,unix:{tmp_path}/b.sock")
    assert proc.returncode == 1
    assert "has an empty member" in proc.stderr, proc.stderr


@pytest.mark.parametrize("address", ["localhost", "dns:///qrmid.example.org", "ipv4:127.0.0.1:9,127.0.0.2",
                                     "[::1]", "unix:{tmp}/a.sock,qrmid.example.org"])
def test_a_member_without_a_port_is_refused(c_build: Path, tmp_path: Path, address: str) -> None:
    proc = run_example(c_build, address.format(tmp=tmp_path))
    portless = {"ipv4:127.0.0.1:9,127.0.0.2": "ipv4:127.0.0.2", "unix:{tmp}/a.sock,qrmid.example.org":
                "qrmid.example.org"}.get(address, address)
    assert proc.returncode == 1
    assert f"address '{portless}' has no port, so gRPC would call port 443" in proc.stderr, proc.stderr


def test_members_with_their_ports_are_not_refused_for_it(c_build: Path, tmp_path: Path) -> None:
    port = refused_port().rpartition(":")[2]
    proc = run_example(c_build, f"unix:{tmp_path}/none.sock,{refused_port()},dns:///localhost:{port},[::1]:{port}")
    assert proc.returncode == 1 and "has no port" not in proc.stderr
    assert "ListResources failed: UNAVAILABLE" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def failover_probe(c_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/c/qrmid_failover_probe.c built against the installed library."""
    out = tmp_path_factory.mktemp("c-failover") / "qrmid_failover_probe"
    proc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-o", str(out),
                           str(Path(__file__).parent / "qrmid_failover_probe.c"),
                           *pkg_config(c_prefix, "--cflags", "--libs"), f"-Wl,-rpath,{c_prefix / 'lib'}"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


class Probe:
    """The failover probe running on an address; ``ask`` sends one command and returns its answer line."""

    def __init__(self, binary: Path, address: str) -> None:
        self.process = subprocess.Popen([str(binary), address, json.dumps(BELL)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.first = self.process.stdout.readline().strip()

    def ask(self, command: str) -> str:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0


def test_one_client_moves_on_when_members_are_killed_or_stopped_between_calls(failover_probe: Path) -> None:
    scratch = short_dir()
    socks = [scratch / f"m{i}.sock" for i in range(3)]
    with member(socks[1], scratch / "j1.db") as first, member(socks[2], scratch / "j2.db", delay=0.2):
        probe = Probe(failover_probe, ",".join([f"unix:{socks[0]}", *(str(sock) for sock in socks[1:])]))
        try:
            assert probe.first == "members: 3"
            assert probe.ask("list") == "list: OK noop"
            task_id, request_id, tried = probe.ask("start noop").removeprefix("start: OK ").split()
            assert len(request_id) == 32 and tried == "1", "the runtime gave StartTask a request id"
            first.kill()
            first.wait()
            assert probe.ask("list") == "list: OK noop"
            started = probe.ask("start noop").removeprefix("start: OK ").split()
            assert started[0] != task_id and started[2] == "1", "the next member took it, and keeps the calls"
            states = [int(state) for state in probe.ask(f"watch {started[0]}").removeprefix("watch: OK ").split()]
            assert states[-1] == pb.TASK_STATE_COMPLETED and states == sorted(set(states))
        finally:
            probe.close()


@pytest.mark.parametrize("wrapper", [[], ["valgrind", *VALGRIND_ARGS]], ids=["plain", "valgrind"])
def test_a_stream_moves_on_before_its_first_message(failover_probe: Path, wrapper: list[str]) -> None:
    if wrapper and shutil.which("valgrind") is None:
        pytest.fail("valgrind is missing: apt-get install valgrind")
    scratch = short_dir()
    with member(scratch / "live.sock", scratch / "journal.db"):
        with Client(f"unix:{scratch}/live.sock", timeout=30) as client:
            task, _ = client.run("noop", sampler_payload(BELL))
        address = f"{refused_port()},unix:{scratch}/none.sock,unix:{scratch}/live.sock"
        probe = subprocess.run([*wrapper, str(failover_probe), address, json.dumps(BELL)], input=f"watch {task.id}\n",
                               capture_output=True, text=True, timeout=300, check=False)
    assert probe.returncode == 0, probe.stderr[-6000:]
    head, watched = probe.stdout.splitlines()
    states = [int(state) for state in watched.removeprefix("watch: OK ").split()]
    assert head == "members: 3" and states[-1] == pb.TASK_STATE_COMPLETED and states == sorted(set(states)), watched
    if wrapper:
        assert "ERROR SUMMARY: 0 errors" in probe.stderr
