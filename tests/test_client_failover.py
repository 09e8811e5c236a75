"""Clients fail over between the members an address lists: real daemons on real sockets, some of them down,
stopped or killed with SIGKILL between calls or in the middle of a watch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from daemons import ROOT, serving, short_dir, write_config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from impostor import Impostor
from impostor import impostor as impostor_of
from lossy_proxy import LosingProxy
from system_users import system_users
from test_qrmi_dropin import daemon, job_env, program  # noqa: F401  (fixtures: a daemon, a job's leases)

from qrmid import examples
from qrmid.client import AsyncClient, Client, sampler_payload
from qrmid.client_auth import ClientAuth
from qrmid.client_members import split_address
from qrmid.v1 import quantum_resources_pb2 as pb

BELL = json.loads((ROOT / "qrmid" / "examples" / "bell.json").read_text())["parameters"]


def noop(delay: float = 0.0) -> str:
    return f'[[resources]]\ntype = "noop"\nname = "noop"\nslots = 2\ndelay_seconds = {delay}\n'


@contextmanager
def member(sock: Path, journal: Path, delay: float = 0.0, tcp: str = "", store: str = "",
           tokens_on_socket: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """``qrmid serve`` on ``sock`` (and ``tcp``, with the token in ``TOKENS``, on the socket too when
    ``tokens_on_socket``) with its journal at ``journal``, or the ``[cluster]`` section ``store``; SIGTERM at exit
    unless it is gone already."""
    listen = ""
    if tcp:
        tokens = write_config(sock.with_suffix(".tokens"), TOKENS)
        on_socket = 'auth = "token"\n' if tokens_on_socket else ""
        listen = f'{on_socket}tcp = "{tcp}"\ntcp_auth = "token"\n[auth]\ntokens_file = "{tokens}"\n'
    cfg = write_config(sock.with_suffix(".toml"),
                       f'[daemon]\nsocket = "{sock}"\n{listen}[journal]\npath = "{journal}"\n{store}{noop(delay)}')
    with serving(cfg, f"unix:{sock}") as process:
        yield process


TOKEN = "failover-test-token-5f0c9e2b7a1d4c36"
TOKENS = f'[[token]]\nname = "portal"\ntoken = "{TOKEN}"\n'


def refused_port() -> str:
    """A loopback address nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def qrmid(*args: str, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qrmid", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "QRMID_ADDRESS": address, "COLUMNS": "200"})


def test_address_forms() -> None:
    assert split_address("/run/a.sock") == ["unix:/run/a.sock"]
    assert split_address("unix:/a.sock, /b.sock,host1:50051,dns:///qrmid.example.org:443") == [
        "unix:/a.sock", "unix:/b.sock", "host1:50051", "dns:///qrmid.example.org:443"]
    assert split_address("ipv4:10.0.0.1:50051,10.0.0.2:50051") == ["ipv4:10.0.0.1:50051,10.0.0.2:50051"]
    with pytest.raises(ValueError, match="empty member"):
        split_address("/a.sock,,/b.sock")


def test_every_call_is_served_when_the_first_members_are_down() -> None:
    scratch = short_dir()
    with member(scratch / "live.sock", scratch / "journal.db"):
        address = f"unix:{scratch}/none.sock,{refused_port()},unix:{scratch}/live.sock"
        with Client(address, timeout=30) as client:
            assert client.address == address
            assert [r.name for r in client.list_resources()] == ["noop"]
            assert client.resource("noop").name == "noop"
            lease = client.acquire("noop", slurm_job_id="7")
            assert [held.id for held in client.list_leases("noop")] == [lease.id]
            started = client.start_task("noop", sampler_payload(BELL), lease_token=lease.token)
            assert started.client_request_id, "StartTask carries a request id the client made"
            again = client.start_task("noop", sampler_payload(BELL), lease_token=lease.token,
                                      request_id=started.client_request_id)
            assert again.id == started.id, "a retried StartTask is the same task"
            states = [task.state for task in client.watch(started.id)]
            assert states[-1] == pb.TASK_STATE_COMPLETED and states == sorted(set(states))
            assert client.task(started.id).state == pb.TASK_STATE_COMPLETED
            assert client.result(started.id)
            client.logs(started.id)
            task, result = client.run("noop", sampler_payload(BELL))
            assert task.state == pb.TASK_STATE_COMPLETED and result
            assert client.release(lease.token).lease.id == lease.id


def test_no_member_answering_names_them_all() -> None:
    scratch = short_dir()
    refused = refused_port()
    with Client(f"{scratch}/none.sock,{refused}", timeout=30) as client, \
            pytest.raises(grpc.RpcError) as refused_call:
        client.list_resources()
    assert refused_call.value.code() == grpc.StatusCode.UNAVAILABLE
    message = refused_call.value.details()
    assert f"unix:{scratch}/none.sock: no daemon at" in message and f"{refused}:" in message


async def test_calls_move_on_when_members_are_killed_or_stopped_between_calls() -> None:
    scratch = short_dir()
    socks = [scratch / f"m{i}.sock" for i in range(3)]
    with member(socks[0], scratch / "j0.db") as first, member(socks[1], scratch / "j1.db") as second, \
            member(socks[2], scratch / "j2.db"):
        async with AsyncClient(",".join(str(sock) for sock in socks), timeout=30) as client:
            on_first, _ = await client.run("noop", sampler_payload(BELL))
            first.kill()
            first.wait()
            with pytest.raises(grpc.RpcError) as unknown:
                await client.task(on_first.id)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND, "the second member answered, not knowing it"
            on_second, _ = await client.run("noop", sampler_payload(BELL))
            assert (await client.task(on_second.id)).state == pb.TASK_STATE_COMPLETED
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
            with pytest.raises(grpc.RpcError) as unknown:
                await client.task(on_second.id)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND, "the third member answered, not knowing it"
            on_third, result = await client.run("noop", sampler_payload(BELL))
            assert on_third.state == pb.TASK_STATE_COMPLETED and result

@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_watch_resumes_on_another_member_without_repeating_a_state(kind: str, request: pytest.FixtureRequest) -> None:
    """The member a watch is on is killed; another member on the same store (the first one's SQLite journal, or
    one PostgreSQL database) comes up; the watch goes on there."""
    scratch = short_dir()
    a, b = scratch / "a.sock", scratch / "b.sock"
    journals, stores = [scratch / "journal.db"] * 2, ["", ""]
    if kind == "postgresql":
        db = request.getfixturevalue("database")
        password = write_config(scratch / "pgpass", db.password + "\n")
        journals = [scratch / "a.db", scratch / "b.db"]  # only the payload spool sits beside them
        stores = [f'[cluster]\ndsn = "{db.dsn}"\npassword_file = "{password}"\nmember = "{name}"\n'
                  for name in ("node-a", "node-b")]
    with Client(f"unix:{a},unix:{b}", timeout=30) as client:
        with member(a, journals[0], delay=0.5, store=stores[0]) as first:
            drained = qrmid("admin", "drain", "noop", "--reason", "maintenance", address=f"unix:{a}")
            assert drained.returncode == 0, drained.stderr
            task = client.start_task("noop", sampler_payload(BELL))
            watch = client.watch(task.id)
            assert next(watch).state == pb.TASK_STATE_QUEUED
            first.kill()
            first.wait()
        with member(b, journals[1], delay=0.5, store=stores[1]):
            resumed = qrmid("admin", "resume", "noop", address=f"unix:{b}")
            assert resumed.returncode == 0, resumed.stderr
            states = [pb.TASK_STATE_QUEUED, *(seen.state for seen in watch)]
    assert states[-1] == pb.TASK_STATE_COMPLETED
    assert states == sorted(set(states)), f"a state was repeated or went back: {states}"


def test_the_cli_fails_over(tmp_path: Path) -> None:
    scratch = short_dir()
    with member(scratch / "live.sock", scratch / "journal.db"):
        address = f"{tmp_path}/none.sock,{refused_port()},{scratch}/live.sock"
        listed = qrmid("resources", address=address)
        assert listed.returncode == 0 and "noop" in listed.stdout, listed.stderr
        run = qrmid("run", "noop", str(ROOT / "qrmid" / "examples" / "bell.json"), "--raw", address=address)
        assert run.returncode == 0, run.stderr
        drained = qrmid("admin", "drain", "noop", address=address)
        assert drained.returncode == 0 and "draining" in drained.stderr.lower(), drained.stderr
    bad = qrmid("resources", address=f"{tmp_path}/a.sock,,{tmp_path}/b.sock")
    assert bad.returncode == 1 and "empty member" in bad.stderr


def test_the_health_service_streams_serving() -> None:
    """gRPC's client-side health checking of a network member watches the health service."""
    scratch = short_dir()
    with member(scratch / "live.sock", scratch / "journal.db"), \
            grpc.insecure_channel(f"unix:{scratch}/live.sock") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


@pytest.mark.parametrize("form", ["members", "one target"])
def test_network_members_balance_and_fail_over(form: str) -> None:
    """Over TCP: a list of members (the client's failover), or one ipv4: target over both daemons (gRPC's
    round_robin with health checking and its retry policy); a member is killed between calls."""
    scratch = short_dir()
    ports = [refused_port(), refused_port()]
    address = ",".join(ports) if form == "members" else "ipv4:" + ",".join(ports)
    token = scratch / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    with member(scratch / "a.sock", scratch / "a.db", tcp=ports[0]) as first, \
            member(scratch / "b.sock", scratch / "b.db", tcp=ports[1]), \
            Client(address, timeout=30, auth=ClientAuth.resolve("token", token_file=token)) as client:
        assert client.address == address
        for _ in range(4):  # one target: round_robin spreads these over both daemons, which share no tasks yet
            assert client.start_task("noop", sampler_payload(BELL)).owner == "portal"
        first.kill()
        first.wait()
        for _ in range(4):
            assert [r.name for r in client.list_resources()] == ["noop"]
            assert client.start_task("noop", sampler_payload(BELL)).owner == "portal"


def test_a_member_draining_for_shutdown_sends_new_tasks_to_the_next() -> None:
    scratch = short_dir()
    a, b = scratch / "a.sock", scratch / "b.sock"
    with member(a, scratch / "a.db", delay=600) as first, member(b, scratch / "b.db"), \
            Client(f"unix:{a},unix:{b}", timeout=30) as client, Client(f"unix:{b}", timeout=30) as only_b:
        running = client.start_task("noop", sampler_payload(BELL))
        first.send_signal(signal.SIGTERM)  # its running task holds it in its shutdown grace, still answering
        with Client(f"unix:{a}", timeout=30) as only_a:
            while True:  # until it has begun to stop
                try:
                    only_a.start_task("noop", sampler_payload(BELL))
                except grpc.RpcError as exc:
                    draining = exc
                    break
        assert draining.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in draining.details()
        moved = client.start_task("noop", sampler_payload(BELL))
        assert only_b.task(moved.id).id == moved.id and moved.id != running.id
        first.kill()
        first.wait()


def test_a_start_task_whose_answer_was_lost_is_not_started_twice() -> None:
    """The first member (over TCP, through a proxy) queues the task and its answer is lost, then it is gone; the
    call goes on at the next member, the same daemon over its socket: the request id finds the task."""
    scratch = short_dir()
    tcp = refused_port()
    token = scratch / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    with member(scratch / "d.sock", scratch / "d.db", delay=600, tcp=tcp, tokens_on_socket=True) as served:
        proxy = LosingProxy(int(tcp.rsplit(":", 1)[1]), nth=2, refuse_after=True)  # health, StartTask
        try:
            with Client(f"{proxy.address},unix:{scratch}/d.sock", timeout=30,
                        auth=ClientAuth.resolve("token", token_file=token)) as client:
                task = client.start_task("noop", sampler_payload(BELL))
                assert proxy.lost.is_set(), "the first member's answer to StartTask was lost"
                resource = client.resource("noop")
        finally:
            proxy.close()
            served.kill()  # not a shutdown grace spent waiting for the task
    assert resource.queue_length + resource.running_tasks == 1, f"one task, not two: {resource}"
    assert task.client_request_id


MALLORY = "qrmid-fo-mallory"


@pytest.fixture(scope="module")
def impostor() -> Iterator[Impostor]:
    """Another user's listener where the first member's socket is said to be."""
    with system_users((MALLORY,)), impostor_of(MALLORY) as found:
        yield found


def test_another_users_socket_in_the_list_gets_nothing(impostor: Impostor) -> None:
    scratch = short_dir()
    token = scratch / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    with member(scratch / "live.sock", scratch / "j.db", tcp=refused_port(), tokens_on_socket=True), \
            Client(f"unix:{impostor.socket},unix:{scratch}/live.sock", timeout=30,
                   auth=ClientAuth.resolve("token", token_file=token)) as client:
        assert [r.name for r in client.list_resources()] == ["noop"]
        assert client.start_task("noop", sampler_payload(BELL)).owner == "portal"
    time.sleep(1)  # what a connection would have delivered by now
    assert impostor.bytes() == b"", "the socket check kept every byte from another user's socket"


def test_the_qrmi_dropin_fails_over_through_the_client(job_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    """Framework adapters build on the client: a qrmi program's job address lists a missing member first."""
    (tmp_path / "bell.json").write_text(json.dumps(examples.load("bell")))
    listed = {**job_env, "QRMID_ADDRESS": f"unix:{tmp_path}/none.sock,{job_env['QRMID_ADDRESS']}"}
    report = program(listed, tmp_path, "resource_lifecycle.py", "local-qiskit", "IBMQuantumSystem", "bell.json")
    assert report["accessible"] and report["online"] and report["statuses"][-1] == "TaskStatus.Completed"
    assert listed["QRMID_ADDRESS"] in report["repr"]
