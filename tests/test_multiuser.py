"""Two real Unix users against one qrmid over MUNGE: a real munged with its own key, a real daemon process,
and clients in child processes that drop to each user's uid before making a single call."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import httpx
import pytest
from daemons import ROOT, wait_serving
from emulators.pasqal_fixtures import CLIENT_ID, PROJECT, USERNAME, fetch_device, sequence
from emulators.pasqal_fixtures import CONFIG as PASQAL_CONFIG
from munged import munged as start_munged
from system_users import system_users

from qrmid.client import AsyncClient, pulser_payload, sampler_payload
from qrmid.client_auth import ClientAuth
from qrmid.emulators.launch import Proc, start_emulator, start_moto
from qrmid.v1 import admin_pb2, admin_pb2_grpc, metrics_pb2, metrics_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

USERS = ("qrmid-alice", "qrmid-bob")

# Runs as root until its imports are done (the interpreter lives under /root), then drops to the user named
# in argv[1] for good and runs the JSON actions in argv[2] against $QRMID_ADDRESS with QRMID_AUTH=munge.
CLIENT = r"""
import asyncio, concurrent.futures.thread, json, os, pwd, sys  # imported before the uid drop
import grpc
from qrmid.client import AsyncClient, pulser_payload
from qrmid.client_auth import MUNGE_METADATA
from qrmid.ops import munge
from qrmid.v1 import quantum_resources_pb2 as pb, quantum_resources_pb2_grpc as pb_grpc

user = pwd.getpwnam(sys.argv[1])
munge._lib(), munge._free()
os.setgroups([])
os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)


def status(exc):
    return f"{exc.code().name}: {exc.details()}"


async def outcome(call):
    try:
        await call()
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return status(exc)


async def drain(stream):
    async for _ in stream:
        pass


def ns(stamp):
    return stamp.seconds * 1_000_000_000 + stamp.nanos


async def act(client, stub, action):
    op = action["op"]
    if op == "start":
        tasks = []
        for _ in range(action.get("n", 1)):
            try:
                tasks.append(await client.start_task(action["resource"], pulser_payload({}, 1),
                                                     lease_token=action.get("lease", "")))
            except grpc.aio.AioRpcError as exc:
                return {"error": status(exc)}
        return {"ids": [t.id for t in tasks], "owners": sorted({t.owner for t in tasks})}
    if op == "acquire":
        try:
            lease = await client.acquire(action["resource"], on_behalf_of=action.get("on_behalf_of", ""))
        except grpc.aio.AioRpcError as exc:
            return {"error": status(exc)}
        return {"token": lease.token, "owner": lease.owner}
    if op == "release":
        return await outcome(lambda: client.release(action["token"]))
    if op == "probe":
        tid = action["task"]
        rpcs = {
            "GetTask": lambda: client.task(tid),
            "WatchTask": lambda: drain(client.watch(tid)),
            "GetTaskResult": lambda: client.result(tid),
            "GetTaskLogs": lambda: client.logs(tid),
            "StopTask": lambda: client.stop_task(tid),
        }
        return {name: await outcome(call) for name, call in rpcs.items()}
    if op == "tasks":
        found = []
        for tid in action["ids"]:
            task = await client.task(tid)
            found.append({"id": task.id, "owner": task.owner, "state": pb.TaskState.Name(task.state),
                          "create": ns(task.create_time), "start": ns(task.start_time)})
        return found
    if op == "wait":
        return [pb.TaskState.Name((await client.wait(tid)).state) for tid in action["ids"]]
    if op == "replay":
        credential = await asyncio.to_thread(munge.encode, b"", os.environ["QRMID_MUNGE_SOCKET"])
        return [await outcome(lambda: stub.ListResources(pb.ListResourcesRequest(),
                                                         metadata=((MUNGE_METADATA, credential),)))
                for _ in range(2)]
    if op == "raw":
        metadata = tuple(tuple(pair) for pair in action["metadata"])
        return await outcome(lambda: stub.ListResources(pb.ListResourcesRequest(), metadata=metadata))
    raise ValueError(op)


async def main():
    results = []
    async with AsyncClient() as client:
        async with grpc.aio.insecure_channel(client.address) as channel:
            stub = pb_grpc.QuantumResourcesStub(channel)
            for action in json.loads(sys.argv[2]):
                results.append(await act(client, stub, action))
    print(json.dumps(results))


asyncio.run(main())
"""

CONFIG = """
[daemon]
socket = "{socket}"
socket_mode = "0666"
auth = "munge"
shutdown_grace_seconds = 1

[auth]
munge_socket = "{munge_socket}"

[journal]
path = "{journal}"

[limits]
calls_per_second = 0

[[resources]]
type = "noop"
name = "fast"
slots = 4

[[resources]]
type = "noop"
name = "slow"
slots = 1
delay_seconds = 600

[[resources]]
type = "noop"
name = "contended"
slots = 1
delay_seconds = 0.05
"""


@dataclass
class Daemon:
    address: str
    log: Path
    munge_socket: Path

    def run_as(self, user: str, *actions: dict[str, Any], env: dict[str, str] | None = None) -> list[Any]:
        """The results of ``actions``, run by a client process with ``user``'s uid and gid."""
        proc = subprocess.run([sys.executable, "-c", CLIENT, user, json.dumps(actions)], cwd=ROOT, timeout=600,
                              capture_output=True, text=True, check=False,
                              env={**os.environ, "QRMID_ADDRESS": self.address, "QRMID_AUTH": "munge",
                                   "QRMID_MUNGE_SOCKET": str(self.munge_socket), **(env or {})})
        assert proc.returncode == 0, f"client as {user} failed:\n{proc.stderr}"
        return json.loads(proc.stdout)

    def one(self, user: str, action: dict[str, Any]) -> Any:
        return self.run_as(user, action)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _require_root_tools() -> None:
    missing = [tool for tool in ("useradd", "userdel") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; install with: apt-get install passwd")
    if os.geteuid() != 0:
        pytest.fail("the multi-user tests create users and run clients as them: run them as root")


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[str, ...]]:
    """Two system users without home directories; removed at the end when this fixture created them."""
    _require_root_tools()
    with system_users(USERS) as names:
        yield names


@pytest.fixture(scope="module")
def munged() -> Iterator[Path]:
    """A munged with its own key and socket; its socket path."""
    _require_root_tools()
    with start_munged() as socket:
        yield socket


@pytest.fixture(scope="module")
def daemon(users: tuple[str, str], munged: Path) -> Iterator[Daemon]:
    """qrmid as root with auth = munge on a socket every user may open; its log goes to a file."""
    d = Path(tempfile.mkdtemp(prefix="qd"))
    d.chmod(0o755)
    socket = d / "qrmid.sock"
    config = d / "qrmid.toml"
    config.write_text(CONFIG.format(socket=socket, munge_socket=munged, journal=d / "journal.db"))
    log = d / "qrmid.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(config)], cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"unix:{socket}", process=process)
        yield Daemon(f"unix:{socket}", log, munged)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_each_caller_is_the_user_munge_proves(daemon: Daemon) -> None:
    alice, bob = daemon.one("qrmid-alice", {"op": "start", "resource": "fast"}), \
        daemon.one("qrmid-bob", {"op": "start", "resource": "fast"})
    assert alice["owners"] == ["qrmid-alice"] and bob["owners"] == ["qrmid-bob"]


def test_one_user_cannot_see_fetch_or_cancel_anothers_tasks(daemon: Daemon) -> None:
    done, running = daemon.run_as("qrmid-bob", {"op": "start", "resource": "fast"},
                                  {"op": "start", "resource": "slow"})
    assert daemon.one("qrmid-bob", {"op": "wait", "ids": done["ids"]}) == ["TASK_STATE_COMPLETED"]
    for task in (done["ids"][0], running["ids"][0]):
        probed = daemon.one("qrmid-alice", {"op": "probe", "task": task})
        assert set(probed) == {"GetTask", "WatchTask", "GetTaskResult", "GetTaskLogs", "StopTask"}
        for rpc, outcome in probed.items():
            assert outcome.startswith("PERMISSION_DENIED"), f"alice's {rpc} of bob's task {task}: {outcome}"
            assert "belongs to another user" in outcome
    own = daemon.one("qrmid-bob", {"op": "probe", "task": done["ids"][0]})
    assert own["GetTask"] == own["GetTaskResult"] == own["GetTaskLogs"] == own["WatchTask"] == "OK"
    [still] = daemon.one("qrmid-bob", {"op": "tasks", "ids": running["ids"]})
    assert still["state"] in ("TASK_STATE_QUEUED", "TASK_STATE_RUNNING"), "alice's StopTask did not touch it"
    [seen] = daemon.one("root", {"op": "tasks", "ids": running["ids"]})
    assert seen["owner"] == "qrmid-bob", "root is an admin and sees every task"


def test_one_user_cannot_use_or_release_anothers_lease(daemon: Daemon) -> None:
    lease = daemon.one("qrmid-bob", {"op": "acquire", "resource": "fast"})
    assert lease["owner"] == "qrmid-bob" and lease["token"]
    used, released = daemon.run_as("qrmid-alice", {"op": "start", "resource": "fast", "lease": lease["token"]},
                                   {"op": "release", "token": lease["token"]})
    assert used["error"].startswith("PERMISSION_DENIED") and released.startswith("PERMISSION_DENIED")
    assert daemon.one("qrmid-bob", {"op": "start", "resource": "fast", "lease": lease["token"]})["ids"]


def test_only_admins_acquire_on_behalf_of_another_user(daemon: Daemon) -> None:
    refused = daemon.one("qrmid-alice", {"op": "acquire", "resource": "fast", "on_behalf_of": "qrmid-bob"})
    assert refused["error"].startswith("PERMISSION_DENIED") and "only admins" in refused["error"]
    bob_uid = str(pwd.getpwnam("qrmid-bob").pw_uid)
    granted = daemon.one("root", {"op": "acquire", "resource": "fast", "on_behalf_of": bob_uid})
    assert granted["owner"] == "qrmid-bob"
    assert daemon.one("qrmid-bob", {"op": "start", "resource": "fast", "lease": granted["token"]})["ids"]
    unknown = daemon.one("root", {"op": "acquire", "resource": "fast", "on_behalf_of": "no-such-user-here"})
    assert unknown["error"].startswith("INVALID_ARGUMENT")


def test_replayed_garbage_and_missing_credentials_are_unauthenticated(daemon: Daemon) -> None:
    first, second = daemon.one("qrmid-alice", {"op": "replay"})
    assert first == "OK"
    assert second.startswith("UNAUTHENTICATED") and "Replayed credential" in second
    garbage = daemon.one("qrmid-alice", {"op": "raw", "metadata": [["x-qrmid-munge", "MUNGE:bm90IGEgY3JlZA==:"]]})
    assert garbage.startswith("UNAUTHENTICATED") and "MUNGE credential refused" in garbage
    missing = daemon.one("qrmid-alice", {"op": "raw", "metadata": []})
    assert missing.startswith("UNAUTHENTICATED") and "x-qrmid-munge" in missing


def test_a_credential_from_another_munge_realm_is_refused(daemon: Daemon) -> None:
    """A credential minted by a munged with a different key proves nothing to this daemon."""
    with start_munged() as other:
        [refused] = daemon.run_as("qrmid-alice", {"op": "start", "resource": "fast"},
                                  env={"QRMID_MUNGE_SOCKET": str(other)})
    assert refused["error"].startswith("UNAUTHENTICATED"), refused


def test_fair_share_over_munge(daemon: Daemon) -> None:
    """With 1000 of alice's tasks queued first, bob's 10 start within the first dispatch rounds after his
    submission, not after alice's backlog."""
    [alice] = daemon.run_as("qrmid-alice", {"op": "start", "resource": "contended", "n": 1000})
    assert len(alice["ids"]) == 1000, alice
    bob = daemon.one("qrmid-bob", {"op": "start", "resource": "contended", "n": 10})
    assert daemon.one("qrmid-bob", {"op": "wait", "ids": bob["ids"]}) == ["TASK_STATE_COMPLETED"] * 10
    bob_tasks = daemon.one("qrmid-bob", {"op": "tasks", "ids": bob["ids"]})
    alice_tasks = daemon.one("qrmid-alice", {"op": "tasks", "ids": alice["ids"]})
    submitted = min(task["create"] for task in bob_tasks)
    waiting = [task for task in alice_tasks if task["start"] == 0 or task["start"] > submitted]
    assert len(waiting) > 100, "alice still had a backlog when bob submitted (else the test shows nothing)"
    started_after = sorted((task for task in alice_tasks + bob_tasks if task["start"] > submitted),
                           key=lambda task: task["start"])
    ranks = [index for index, task in enumerate(started_after) if task["owner"] == "qrmid-bob"]
    assert len(ranks) == 10
    assert ranks[-1] < 30, f"bob's tasks started at ranks {ranks} after his submission, behind alice's backlog"
    print(f"\nbob's 10 tasks started at ranks {ranks} of the starts after his submission; "
          f"{len(waiting)} of alice's tasks were waiting")


# Secrets in the config: each value is distinctive, so finding it anywhere is a leak, not a coincidence.
IBM_KEY, IBM_WRONG_KEY = "scan-ibm-apikey-4c1f9a0d", "scan-ibm-wrongkey-77d2e0b3"
AWS_ID, AWS_SECRET = "SCANAWSKEYID93F1C2", "scan-aws-secret-5b8e21aa"
PASQAL_SECRET, PASQAL_WRONG_SECRET = "scan-pasqal-secret-a61c09", "scan-pasqal-wrong-0e4d77"
PASQAL_WRONG_PASSWORD = "scan-pasqal-password-c3b7f2"
SECRETS = (IBM_KEY, IBM_WRONG_KEY, AWS_ID, AWS_SECRET, PASQAL_SECRET, PASQAL_WRONG_SECRET, PASQAL_WRONG_PASSWORD)
CRN, BUCKET = "crn:v1:local:qrmid-scan", "qrmid-scan"


@dataclass
class Vendors:
    ibm: Proc
    s3: Proc
    pasqal: Proc


@pytest.fixture(scope="module")
def vendors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vendors]:
    """The IBM Quantum System and Pasqal Cloud emulators and a moto S3, knowing only the right secrets."""
    d = tmp_path_factory.mktemp("vendors")
    (d / "ibm.toml").write_text(f'api_keys = ["{IBM_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "perth"\n'
                                'device = "perth"\nseed = 7\nnoise = false\n')
    (d / "pasqal.json").write_text(json.dumps({**PASQAL_CONFIG, "service_accounts": [
        {"client_id": CLIENT_ID, "client_secret": PASQAL_SECRET, "user_id": "qrmid", "projects": [PROJECT]}]}))
    s3 = start_moto()
    ibm = start_emulator(d / "ibm.toml")
    pasqal = start_emulator(d / "pasqal.json", module="qrmid.emulators.pasqal_cloud")
    try:
        boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id=AWS_ID,
                     aws_secret_access_key=AWS_SECRET).create_bucket(Bucket=BUCKET)
        yield Vendors(ibm, s3, pasqal)
    finally:
        for proc in (pasqal, ibm, s3):
            proc.stop()


def _secret_config(vendors: Vendors, socket: Path, munge_socket: Path, metrics_port: int) -> str:
    def ibm(name: str, key: str) -> str:
        return (f'[[resources]]\ntype = "ibm-quantum-system"\nname = "{name}"\nbackend = "perth"\n'
                f'poll_interval = 0.05\nstatus_interval = 0.2\nretry_deadline_seconds = 2\n'
                f'QRMI_IBM_QS_ENDPOINT = "{vendors.ibm.url}"\nQRMI_IBM_QS_IAM_ENDPOINT = "{vendors.ibm.url}"\n'
                f'QRMI_IBM_QS_IAM_APIKEY = "{key}"\nQRMI_IBM_QS_SERVICE_CRN = "{CRN}"\n'
                f'QRMI_IBM_QS_AWS_ACCESS_KEY_ID = "{AWS_ID}"\nQRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "{AWS_SECRET}"\n'
                f'QRMI_IBM_QS_S3_ENDPOINT = "{vendors.s3.url}"\nQRMI_IBM_QS_S3_BUCKET = "{BUCKET}"\n'
                'QRMI_IBM_QS_S3_REGION = "us-east-1"\n')

    def pasqal(name: str, grant: str) -> str:
        return (f'[[resources]]\ntype = "pasqal-cloud"\nname = "{name}"\ndevice_type = "EMU_MPS"\n'
                'poll_interval = 0.1\nstatus_interval = 0.2\nretry_deadline_seconds = 2\n'
                f'QRMI_PASQAL_CLOUD_PROJECT_ID = "{PROJECT}"\nQRMI_PASQAL_CLOUD_BASE_URL = "{vendors.pasqal.url}"\n'
                f'QRMI_PASQAL_CLOUD_AUTH_ENDPOINT = "{vendors.pasqal.url}/oauth/token"\n{grant}')

    return (f'[daemon]\nsocket = "{socket}"\nauth = "munge"\nlog_level = "debug"\nshutdown_grace_seconds = 1\n'
            f'[auth]\nmunge_socket = "{munge_socket}"\n[metrics]\naddress = "127.0.0.1:{metrics_port}"\n'
            f'[journal]\npath = "{socket.parent / "journal.db"}"\n'
            + ibm("ibm", IBM_KEY) + ibm("ibm-wrong-key", IBM_WRONG_KEY)
            + pasqal("pasqal", f'QRMI_PASQAL_CLOUD_CLIENT_ID = "{CLIENT_ID}"\n'
                               f'QRMI_PASQAL_CLOUD_CLIENT_SECRET = "{PASQAL_SECRET}"\n')
            + pasqal("pasqal-wrong-secret", f'QRMI_PASQAL_CLOUD_CLIENT_ID = "{CLIENT_ID}"\n'
                                            f'QRMI_PASQAL_CLOUD_CLIENT_SECRET = "{PASQAL_WRONG_SECRET}"\n')
            + pasqal("pasqal-wrong-password", f'PASQAL_USERNAME = "{USERNAME}"\n'
                                              f'PASQAL_PASSWORD = "{PASQAL_WRONG_PASSWORD}"\n'))


def _bell_for_perth() -> pb.Payload:
    from qiskit import QuantumCircuit, qasm3, transpile
    from qiskit_ibm_runtime.fake_provider import FakePerth

    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    isa = transpile(circuit, FakePerth(), optimization_level=1, seed_transpiler=1)
    return sampler_payload({"pubs": [[qasm3.dumps(isa), None, 100]], "version": 2, "support_qiskit": True})


async def _every_read(client: AsyncClient, task_ids: list[str]) -> list[str]:
    """The text of every answer and refusal of every read RPC, for every resource and task."""
    seen: list[str] = []

    async def keep(call: Awaitable[Any]) -> None:
        try:
            seen.append(str(await call))
        except grpc.aio.AioRpcError as exc:
            seen.append(f"{exc.code().name}: {exc.details()}")

    resources = await client.list_resources()
    seen.append(str(resources))
    for resource in resources:
        for call in (client.resource(resource.name), client.target(resource.name), client.metadata(resource.name),
                     client.list_leases(resource.name)):
            await keep(call)
    for task_id in task_ids:
        for call in (client.task(task_id), client.logs(task_id), client.result(task_id),
                     _collect(client.watch(task_id))):
            await keep(call)
    channel = client._members.channels[0]  # the client's own authenticated channel to its one daemon
    metrics, admin = metrics_pb2_grpc.MetricsServiceStub(channel), admin_pb2_grpc.AdminServiceStub(channel)
    for call in (metrics.GetUtilization(metrics_pb2.GetUtilizationRequest()),
                 metrics.ListAccounting(metrics_pb2.ListAccountingRequest()),
                 admin.ListQueues(admin_pb2.ListQueuesRequest()),
                 admin.ListAllLeases(admin_pb2.ListAllLeasesRequest())):
        await keep(call)
    return seen


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


async def _refused(client: AsyncClient, resource: str, task_id: str) -> pb.Task:
    """A task on a resource with wrong credentials: its end, or, while the resource reports why it cannot
    run it, the task stopped."""
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        task = await client.task(task_id)
        if task.state in (pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED):
            return task
        assert task.state != pb.TASK_STATE_COMPLETED, f"{resource} ran a task with wrong credentials"
        if (await client.resource(resource)).status_reason:
            return await client.stop_task(task_id)
        assert asyncio.get_running_loop().time() < deadline, f"{resource} neither failed the task nor said why"
        await asyncio.sleep(0.2)


async def _exercise(address: str, auth: ClientAuth, pulser: pb.Payload) -> list[str]:
    """Run a task on every resource (the wrongly configured ones fail) and read everything back."""
    async with AsyncClient(address, auth=auth) as client:
        await client.acquire("ibm")
        ended: dict[str, Any] = {}
        for resource, payload in (("ibm", _bell_for_perth()), ("ibm-wrong-key", _bell_for_perth()),
                                  ("pasqal", pulser), ("pasqal-wrong-secret", pulser),
                                  ("pasqal-wrong-password", pulser)):
            try:
                task = await client.start_task(resource, payload)
            except grpc.aio.AioRpcError as exc:
                ended[resource] = f"{exc.code().name}: {exc.details()}"
                continue
            ended[resource] = await (client.wait(task.id) if resource in ("ibm", "pasqal")
                                     else _refused(client, resource, task.id))
        assert ended["ibm"].state == ended["pasqal"].state == pb.TASK_STATE_COMPLETED, ended
        task_ids = [task.id for task in ended.values() if not isinstance(task, str)]
        return [str(ended)] + await _every_read(client, task_ids)


def test_no_configured_secret_appears_in_any_answer_or_log(vendors: Vendors, munged: Path) -> None:
    d = Path(tempfile.mkdtemp(prefix="qs"))
    socket, log, metrics_port = d / "qrmid.sock", d / "qrmid.log", free_port()
    config = d / "qrmid.toml"
    config.touch(mode=0o600)
    config.write_text(_secret_config(vendors, socket, munged, metrics_port))
    device = fetch_device(vendors.pasqal.url, "EMU_MPS")
    pulser = pulser_payload(str(sequence(device, atoms=2, parametrized=False).to_abstract_repr()), 10)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(config)], cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"unix:{socket}", process=process)
        answers = asyncio.run(_exercise(f"unix:{socket}", ClientAuth.resolve("munge", munge_socket=str(munged)),
                                        pulser))
        answers.append(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    logged = log.read_text()
    shutil.rmtree(d, ignore_errors=True)
    assert "ibm-wrong-key" in logged and "pasqal-wrong-secret" in logged, "the failures were logged"
    for secret in SECRETS:
        for answer in answers:
            assert secret not in answer, f"secret {secret!r} in an answer: {answer[:2000]}"
        assert secret not in logged, f"secret {secret!r} in the daemon's log"
