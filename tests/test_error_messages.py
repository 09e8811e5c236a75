"""Errors a person can act on: each names the fault, where it is, and the fix; against a real daemon."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from cluster import Cluster
from daemons import ROOT, config, running, short_dir
from postgres import Database

from qrmid.client import (
    AsyncClient,
    Client,
    QrmidError,
    estimator_payload,
    payload_from_task_input,
    sampler_payload,
)
from qrmid.client_errors import InvalidArgument, NotFound, Unreachable
from qrmid.client_members import resolve_address, split_address
from qrmid.daemon import Daemon
from qrmid.emulators.launch import start_emulator, start_moto
from qrmid.ops.paths import default_socket
from qrmid.v1 import quantum_resources_pb2 as pb

BELL = ('OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] meas;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\n'
        'meas[0] = measure q[0];\nmeas[1] = measure q[1];\n')


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    async with running(config([{"type": "local-qiskit", "name": "local-qiskit", "slots": 1, "max_qubits": 4}])) as d:
        yield d


@pytest.fixture
async def qrmid(daemon: Daemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"unix:{daemon.socket}") as client:
        yield client


async def refusal(qrmid: AsyncClient, program_id: str, doc: dict[str, Any]) -> InvalidArgument:
    """The daemon's refusal of ``doc``, checked to be INVALID_ARGUMENT with nothing queued."""
    payload = sampler_payload(doc) if program_id == "sampler" else estimator_payload(doc)
    with pytest.raises(InvalidArgument) as refused:
        await qrmid.start_task("local-qiskit", payload)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return refused.value


@pytest.mark.parametrize(("circuit", "message"), [
    (BELL.replace("h q[0];", "h q[0]"),
     ("pub 0: circuit is not valid OpenQASM 3: line 6, column 1: unexpected 'cx', expected ';' "
      "(is a ';' missing at the end of line 5?)")),
    (BELL.replace("cx q[0], q[1];", "cx q[0] q[1];"), "line 6, column 9: unexpected 'q'"),
    (BELL.replace("h q[0];", "hadamard q[0];"), "line 5, column 1: gate 'hadamard' is not defined"),
    (BELL + "@;\n", "line 9, column 1: unexpected '@'"),
    (BELL + 'meas[0] = "', "line 9, column 11: cannot read '\"'"),
    (BELL.removesuffix(";\n"), "line 8, column 23: unexpected end of the circuit, expected ';'"),
])
async def test_a_qasm_syntax_error_names_its_line_column_and_token(qrmid: AsyncClient, circuit: str,
                                                                   message: str) -> None:
    refused = await refusal(qrmid, "sampler", {"pubs": [[circuit, None, 10]], "version": 2})
    assert message in refused.details()
    assert str(refused).startswith("INVALID_ARGUMENT: invalid payload"), "printed as CODE: message, not a repr"


async def test_unknown_input_keys_are_refused_naming_the_key_and_the_accepted_ones(qrmid: AsyncClient,
                                                                                   daemon: Daemon) -> None:
    refused = await refusal(qrmid, "sampler", {"pubs": [[BELL]], "shtos": 10, "version": 2})
    assert ("unknown key 'shtos' (did you mean 'shots'?): a sampler input takes only pubs, shots, options, "
            "version, support_qiskit") in refused.details()
    refused = await refusal(qrmid, "sampler", {"pubs": [[BELL]], "options": {"default_shot": 5}, "version": 2})
    assert ("unknown key 'default_shot' (did you mean 'default_shots'?): a sampler input's 'options' takes only "
            "default_shots, dynamical_decoupling, execution, twirling, simulator, experimental") in refused.details()
    refused = await refusal(qrmid, "estimator", {"pubs": [[BELL, {"ZZ": 1}]], "shots": 10, "version": 2})
    assert ("unknown key 'shots' (a sampler key: is this a sampler task?): an estimator input takes only pubs, "
            "precision, options, version, support_qiskit, resilience_level, seed_estimator") in refused.details()
    refused = await refusal(qrmid, "sampler", {"pubs": [[BELL]], "options": {"noise": True}, "version": 2})
    assert "unknown key 'noise': a sampler input's 'options' takes only" in refused.details()
    assert daemon.broker.unfinished("local-qiskit") == [], "nothing refused was queued"


async def test_every_key_of_ibms_schema_is_accepted(qrmid: AsyncClient) -> None:
    """What qiskit-ibm-runtime sends (options it does not apply on a simulator included) still runs."""
    unmeasured = BELL.split("meas[0]")[0]
    sampler = {"pubs": [[BELL, None, 20]], "shots": 20, "version": 2, "support_qiskit": True,
               "options": {"default_shots": 20, "dynamical_decoupling": {"enable": False}, "execution": {},
                           "twirling": {"enable_gates": False}, "simulator": {}, "experimental": {}}}
    estimator = {"pubs": [[unmeasured, {"ZZ": 1.0}]], "precision": 0.1, "version": 2, "support_qiskit": True,
                 "resilience_level": 0, "seed_estimator": 1,
                 "options": {"default_precision": 0.1, "default_shots": 100, "seed_estimator": 1, "resilience": {},
                             "dynamical_decoupling": {}, "execution": {}, "twirling": {}, "simulator": {},
                             "experimental": {}}}
    for payload in (sampler_payload(sampler), estimator_payload(estimator)):
        _, data = await qrmid.run("local-qiskit", payload)
        assert json.loads(data)["__type__"] == "PrimitiveResult"


def test_unknown_task_runner_keys_are_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"task input has unknown key 'shots': a Qiskit task input takes only "
                                         r"'program_id' and 'parameters' \(QRMI's task_runner input schema\)"):
        payload_from_task_input({"program_id": "sampler", "parameters": {"pubs": [[BELL]], "version": 2},
                                 "shots": 10})
    with pytest.raises(ValueError, match=r"unknown key 'runs': a Pulser task input takes only 'sequence' and "
                                         r"'job_runs'"):
        payload_from_task_input({"sequence": {}, "job_runs": 10, "runs": 5})


def test_qrmid_run_and_the_task_runner_refuse_an_unknown_task_input_key_before_any_call(tmp_path: Path) -> None:
    doc = json.loads((ROOT / "qrmid" / "examples" / "bell.json").read_text())
    bad = tmp_path / "bell.json"
    bad.write_text(json.dumps({**doc, "shots": 10}))
    nowhere = {"QRMID_ADDRESS": str(short_dir() / "none.sock")}  # refused before any call: no daemon needed
    message = ("task input has unknown key 'shots': a Qiskit task input takes only 'program_id' and 'parameters' "
               "(QRMI's task_runner input schema)")
    run = cli("run", "local-qiskit", str(bad), env=nowhere)
    assert run.returncode == 1 and f"Error: {bad}: {message}" in run.stderr
    runner = subprocess.run([sys.executable, "-m", "qrmid.task_runner", "local-qiskit", str(bad)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, **nowhere, "QRMI_JOB_QPU_RESOURCES": "local-qiskit",
                                 "QRMI_JOB_QPU_TYPES": "ibm-quantum-system"})
    assert runner.returncode == 2 and f"ERROR {message}" in runner.stdout


async def test_refusals_are_qrmid_errors_of_their_code_and_still_grpc_errors(qrmid: AsyncClient) -> None:
    with pytest.raises(NotFound) as missing:
        await qrmid.task("no-such-task")
    error = missing.value
    assert isinstance(error, QrmidError) and isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no-such-task" in error.details()
    assert str(error) == f"NOT_FOUND: {error.details()}"
    assert "debug_error_string" not in repr(error)
    with pytest.raises(NotFound):
        async for _ in qrmid.watch("no-such-task"):  # a stream's refusal too
            pass


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qrmid", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_no_daemon_names_the_address_tried_and_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = short_dir() / "qrmid.sock"
    with Client(str(missing), timeout=10) as qrmid, pytest.raises(Unreachable) as refused:
        qrmid.list_resources()
    assert isinstance(refused.value, grpc.aio.AioRpcError) and refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert str(refused.value) == (f"UNAVAILABLE: no daemon at {missing}: {missing} does not exist (address from the "
                                  "client's address argument). Is `qrmid serve` running there, and is this its "
                                  "address?")
    port = free_port()
    monkeypatch.setenv("QRMID_ADDRESS", f"127.0.0.1:{port}")
    with Client(timeout=10) as qrmid, pytest.raises(Unreachable) as refused:
        qrmid.list_resources()
    assert f"no qrmid daemon answers at 127.0.0.1:{port} (address from QRMID_ADDRESS): " in refused.value.details()
    assert "Connection refused" in refused.value.details()


def test_the_default_address_says_roots_socket_is_the_system_daemons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QRMID_ADDRESS", raising=False)
    default = resolve_address(None)
    assert default.text == f"unix:{default_socket()}"
    if os.geteuid() == 0:
        assert default.origin == "the default for root: the system daemon's socket"
    else:
        assert default.origin.endswith("(the system daemon's socket, root's default, is /run/qrmid/qrmid.sock)")


@pytest.mark.parametrize("address", ["localhost", "dns:///qrmid.example.org", "ipv4:127.0.0.1", "[::1]"])
def test_a_network_address_without_a_port_is_refused_rather_than_sent_to_port_443(
        monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("QRMID_ADDRESS", address)
    with pytest.raises(ValueError, match=rf"address '{re.escape(address)}' \(from QRMID_ADDRESS\) has no port, so "
                                         r"gRPC would call port 443, where no qrmid listens: write .*:PORT"):
        Client()
    for good in ("localhost:50051", "dns:///qrmid.example.org:50051", "ipv4:127.0.0.1:50051", "[::1]:50051"):
        assert split_address(good) == [good]


def test_the_cli_says_which_option_gave_the_address_and_what_to_check() -> None:
    missing = short_dir() / "qrmid.sock"
    given = cli("--address", str(missing), "resources", env={})
    assert given.returncode == 1
    assert (f"Error: UNAVAILABLE: no daemon at {missing}: {missing} does not exist (address from --address). "
            "Is `qrmid serve` running there, and is this its address?") in given.stderr
    port = free_port()
    from_env = cli("leases", env={"QRMID_ADDRESS": f"127.0.0.1:{port}"})
    assert from_env.returncode == 1
    assert f"no qrmid daemon answers at 127.0.0.1:{port} (address from QRMID_ADDRESS)" in from_env.stderr
    assert "Traceback" not in from_env.stderr and "AioRpcError" not in from_env.stderr
    no_port = cli("resources", env={"QRMID_ADDRESS": "localhost"})
    assert no_port.returncode == 1
    assert "address 'localhost' (from QRMID_ADDRESS) has no port, so gRPC would call port 443" in no_port.stderr


async def test_an_unreachable_backend_shows_its_first_failure_at_once_and_comes_online_when_it_answers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The IBM Quantum System API is not there yet: the resource says so at once (not "not checked yet" for the
    retry deadline's two minutes), offers no free slot, logs one warning naming the endpoint, keeps checking, and
    runs tasks once the service answers."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = start_moto()
    try:
        boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key="s").create_bucket(Bucket="jobs")
        resource = {"type": "ibm-quantum-system", "name": "perth", "status_interval": 0.2,
                    "retry_deadline_seconds": 600, "QRMI_IBM_QS_ENDPOINT": endpoint,
                    "QRMI_IBM_QS_IAM_ENDPOINT": endpoint, "QRMI_IBM_QS_IAM_APIKEY": "key",
                    "QRMI_IBM_QS_SERVICE_CRN": "crn:v1:local:tests", "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "k",
                    "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": "s", "QRMI_IBM_QS_S3_ENDPOINT": s3.url,
                    "QRMI_IBM_QS_S3_BUCKET": "jobs", "QRMI_IBM_QS_S3_REGION": "us-east-1"}
        caplog.set_level(logging.INFO, logger="qrmid.core.resource")
        async with running(config([resource])) as daemon, AsyncClient(f"unix:{daemon.socket}") as qrmid:
            shown = await qrmid.resource("perth")
            assert shown.status == pb.RESOURCE_STATUS_OFFLINE
            assert shown.status_reason.startswith("status check failing, retrying: IAM token request (at "
                                                  f"127.0.0.1:{port}): ")
            assert shown.capacity.slots_free == 0
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0], warnings

            emulator_config = tmp_path / "emulator.toml"
            emulator_config.write_text('api_keys = ["key"]\nservice_crn = "crn:v1:local:tests"\n[[backends]]\n'
                                       'name = "perth"\ndevice = "perth"\nseed = 7\nnoise = false\n'
                                       'lanes = { hpc_workload_manager = 4, ibm_quantum_compute = 2 }\n')
            emulator = start_emulator(emulator_config, "--port", str(port))
            try:
                for _ in range(600):  # the check retries at most every 5 s
                    shown = await qrmid.resource("perth")
                    if shown.status == pb.RESOURCE_STATUS_ONLINE:
                        break
                    await asyncio.sleep(0.1)
                assert shown.status == pb.RESOURCE_STATUS_ONLINE, shown.status_reason
                assert shown.capacity.slots_free == 4
                assert any("its backend answers again" in r.getMessage() for r in caplog.records)
                assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1, "warned once"
                circuit = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[1] c;\nx $0;\nc[0] = measure $0;\n'
                _, data = await qrmid.run("perth", sampler_payload({"pubs": [[circuit, None, 10]], "version": 2}))
                assert json.loads(data)["__type__"] == "PrimitiveResult"
            finally:
                emulator.stop()
    finally:
        s3.stop()


def test_a_cluster_member_without_credentials_shows_the_dispatchers_first_failure(database: Database,
                                                                                 tmp_path: Path) -> None:
    """The dispatcher publishes the first failed attempt at once: a member serving the resource without its
    credentials shows it offline with the same reason, and no free slot, within a moment."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    dispatcher = ('[[resources]]\ntype = "ibm-quantum-system"\nname = "perth"\nstatus_interval = 0.5\n'
                  f'retry_deadline_seconds = 600\nQRMI_IBM_QS_ENDPOINT = "{endpoint}"\n'
                  f'QRMI_IBM_QS_IAM_ENDPOINT = "{endpoint}"\nQRMI_IBM_QS_IAM_APIKEY = "key"\n'
                  'QRMI_IBM_QS_SERVICE_CRN = "crn:v1:local:tests"\nQRMI_IBM_QS_AWS_ACCESS_KEY_ID = "k"\n'
                  f'QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "s"\nQRMI_IBM_QS_S3_ENDPOINT = "{endpoint}"\n'
                  'QRMI_IBM_QS_S3_BUCKET = "jobs"\nQRMI_IBM_QS_S3_REGION = "us-east-1"\n')
    without = '[[resources]]\ntype = "ibm-quantum-system"\nname = "perth"\ndispatch = false\n'
    with Cluster(database, dispatcher, members=2, tmp=tmp_path, own={"m2": without}) as cluster, \
            Client(cluster.member("m2").address, timeout=30) as m2:
        for _ in range(300):
            shown = m2.resource("perth")
            if shown.status_reason != "not checked yet":
                break
            time.sleep(0.1)
        assert shown.status == pb.RESOURCE_STATUS_OFFLINE
        assert shown.status_reason.startswith(
            f"status check failing, retrying: IAM token request (at 127.0.0.1:{port}): "), shown.status_reason
        assert shown.capacity.slots_free == 0
        log = cluster.member("m1").log.read_text()
        assert (f"WARNING qrmid.core.resource: resource perth: status check failing, retrying: IAM token request (at "
                f"127.0.0.1:{port})") in log
