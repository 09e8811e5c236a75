"""Slurm gating on the real one-node Slurm 22.05: while a resource is drained, offline or paused, qrmid's
license-only reservation ``qrmid-<resource>`` keeps new jobs asking for its license PENDING (reason Licenses),
running jobs run on, and the jobs start once the resource is back. Reservations qrmid does not name are left
alone; a restarted daemon reconciles its own; status flaps shorter than the debounce never reach slurmctld."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from click.testing import CliRunner
from conftest import Cluster, free_port
from daemons import config, serving, subprocess_daemon
from ibm_services import ibm_services

from qrmid import admin_cli
from qrmid.backends.base import BackendState, BackendStatus
from qrmid.cli import main
from qrmid.client_auth import MUNGE_METADATA
from qrmid.core.slurm import Scontrol
from qrmid.core.slurm_gate import SlurmGate
from qrmid.daemon import build_resource
from qrmid.ops import munge
from qrmid.ops.config import ConfigError, load
from qrmid.v1 import admin_pb2, admin_pb2_grpc

API_KEY = "qrmid-gate-key"
CRN = "crn:v1:local:qrmid-gate"
GATE_KEYS = "gate_debounce_seconds = 0.5\ngate_retry_seconds = 0.5\ngate_recheck_seconds = 1\n"


def reservations(cluster: Cluster) -> dict[str, dict[str, str]]:
    """slurmctld's reservations by name, with their fields."""
    out = cluster.run("scontrol", "show", "reservation", "--oneliner").stdout
    found = (dict(part.split("=", 1) for part in line.split() if "=" in part) for line in out.splitlines())
    return {fields["ReservationName"]: fields for fields in found if "ReservationName" in fields}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.2)


def pending_reason(cluster: Cluster, job_id: str, timeout: float = 30) -> tuple[str, str]:
    """The job's state and reason once slurmctld has looked at it (a fresh job's reason is None)."""
    deadline = time.monotonic() + timeout
    while (job := cluster.job(job_id)).state == "PENDING" and job.reason == "None" and time.monotonic() < deadline:
        time.sleep(0.2)
    return job.state, job.reason


def hold_by_hand(cluster: Cluster, name: str, licenses: str) -> None:
    cluster.run("scontrol", "create", "reservation", f"ReservationName={name}", "Flags=LICENSE_ONLY",
                f"Licenses={licenses}", "StartTime=now", "Duration=infinite", "Users=root")


def admin_call(address: str, method: str, request: Any, munge_socket: Path | None = None) -> Any:
    """An AdminService call as root (with a MUNGE credential when the daemon asks for one)."""
    metadata = [(MUNGE_METADATA, munge.encode(b"", str(munge_socket)))] if munge_socket else []
    with grpc.insecure_channel(address) as channel:
        return getattr(admin_pb2_grpc.AdminServiceStub(channel), method)(request, metadata=metadata, timeout=30)


def gates(address: str, munge_socket: Path | None = None) -> dict[str, admin_pb2.SlurmGate]:
    listed = admin_call(address, "ListSlurmGates", admin_pb2.ListSlurmGatesRequest(), munge_socket)
    return {gate.resource: gate for gate in listed.gates}


def admin_resources(address: str) -> dict[str, dict[str, Any]]:
    """``qrmid admin resources --json``, by resource."""
    result = CliRunner().invoke(main, ["--address", address, "admin", "resources", "--json"])
    assert result.exit_code == 0, result.output
    return {entry["resource"]: entry for entry in json.loads(result.output)["resources"]}


def test_a_drained_qpu_keeps_new_qpu_jobs_pending_and_lets_running_ones_run(cluster: Cluster) -> None:
    stamp = time.monotonic_ns()
    started, release = cluster.out / f"gate-started-{stamp}", cluster.out / f"gate-release-{stamp}"
    running = cluster.sbatch(f"touch {started}\nwhile [ ! -e {release} ]; do sleep 0.2; done\necho done\n",
                             "-L", "slow-qpu", "--qpu=slow-qpu", "--time=10")
    cluster.wait_for(started, running)
    assert gates(cluster.qrmid_address, cluster.munge_socket)["slow-qpu"].state == "open"

    admin_call(cluster.qrmid_address, "DrainResource",
               admin_pb2.DrainResourceRequest(resource="slow-qpu", reason="calibration"), cluster.munge_socket)
    wait_until(lambda: "qrmid-slow-qpu" in reservations(cluster), "reserved")
    held = reservations(cluster)["qrmid-slow-qpu"]
    assert (held["Licenses"], held["Users"], held["NodeCnt"]) == ("slow-qpu:2", "root", "0")
    gate = gates(cluster.qrmid_address, cluster.munge_socket)["slow-qpu"]
    assert (gate.state, gate.reservation, gate.license) == ("held", "qrmid-slow-qpu", "slow-qpu")
    assert "calibration" in gate.detail

    waiting = cluster.sbatch("echo ran\n", "-L", "slow-qpu", "--qpu=slow-qpu", "--time=5")
    assert pending_reason(cluster, waiting) == ("PENDING", "Licenses")
    assert cluster.job(running).state == "RUNNING", "the running job is not disturbed"
    release.touch()
    assert cluster.wait_job(running, {"COMPLETED", "FAILED", "CANCELLED"}).state == "COMPLETED"
    time.sleep(3)  # several scheduling passes with the license free but reserved
    assert (cluster.job(waiting).state, cluster.job(waiting).reason) == ("PENDING", "Licenses")

    admin_call(cluster.qrmid_address, "ResumeResource", admin_pb2.ResumeResourceRequest(resource="slow-qpu"),
               cluster.munge_socket)
    assert cluster.wait_job(waiting, {"COMPLETED", "FAILED", "CANCELLED"}).state == "COMPLETED", \
        cluster.output(waiting)
    assert "ran" in cluster.output(waiting)
    assert "qrmid-slow-qpu" not in reservations(cluster)
    assert gates(cluster.qrmid_address, cluster.munge_socket)["slow-qpu"].state == "open"


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as they want: no cell is cut short in the captured output."""
    monkeypatch.setattr(admin_cli.out, "width", 250)


@pytest.fixture(scope="module")
def ibm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The IBM emulator with backend gate_ibm, and moto's S3 for the adapter; their URLs."""
    path = tmp_path_factory.mktemp("gate-ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n'
                    '[[backends]]\nname = "gate_ibm"\ndevice = "perth"\nseed = 7\nnoise = false\n')
    with ibm_services(path, "qrmid-gate") as (emulator, s3):
        yield emulator.url, s3.url


def set_backend(url: str, **state: Any) -> None:
    httpx.post(f"{url}/_emulator/backends/gate_ibm", json=state, timeout=10).raise_for_status()


def test_an_offline_or_paused_backend_holds_jobs_until_it_is_back(cluster: Cluster, ibm: tuple[str, str]) -> None:
    url, s3 = ibm
    text = (f'[slurm]\nslurm_conf = "{cluster.dir / "etc" / "slurm.conf"}"\n{GATE_KEYS}\n'
            f'[[resources]]\ntype = "ibm-quantum-system"\nname = "gate_ibm"\nstatus_interval = 0.2\n'
            f'slurm_gate = true\nQRMI_IBM_QS_ENDPOINT = "{url}"\nQRMI_IBM_QS_IAM_ENDPOINT = "{url}"\n'
            f'QRMI_IBM_QS_IAM_APIKEY = "{API_KEY}"\nQRMI_IBM_QS_SERVICE_CRN = "{CRN}"\n'
            'QRMI_IBM_QS_AWS_ACCESS_KEY_ID = "k"\nQRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "s"\n'
            f'QRMI_IBM_QS_S3_ENDPOINT = "{s3}"\nQRMI_IBM_QS_S3_BUCKET = "qrmid-gate"\n'
            'QRMI_IBM_QS_S3_REGION = "us-east-1"\n')
    with subprocess_daemon(text) as (address, _):
        wait_until(lambda: admin_resources(address)["gate_ibm"]["slurm"]["state"] == "open", "open")
        set_backend(url, status="offline")
        wait_until(lambda: "qrmid-gate_ibm" in reservations(cluster), "reserved while offline")
        shown = admin_resources(address)["gate_ibm"]["slurm"]
        assert (shown["state"], shown["reservation"]) == ("held", "qrmid-gate_ibm")
        assert shown["detail"].startswith("offline"), shown
        table = CliRunner().invoke(main, ["--address", address, "admin", "resources"])
        assert table.exit_code == 0 and "held (reservation qrmid-gate_ibm): offline" in table.output, table.output
        job = cluster.sbatch("echo ran\n", "-L", "gate_ibm", "--time=5")
        assert pending_reason(cluster, job) == ("PENDING", "Licenses")

        set_backend(url, status="online")
        assert cluster.wait_job(job, {"COMPLETED", "FAILED", "CANCELLED"}).state == "COMPLETED"
        assert "qrmid-gate_ibm" not in reservations(cluster)

        set_backend(url, locked=True)  # a backend reservation: the resource is paused
        wait_until(lambda: "qrmid-gate_ibm" in reservations(cluster), "reserved while paused")
        assert admin_resources(address)["gate_ibm"]["slurm"]["detail"].startswith("paused")
        set_backend(url, locked=False)
        wait_until(lambda: "qrmid-gate_ibm" not in reservations(cluster), "released once unlocked")


GATE_QPU = '[[resources]]\ntype = "noop"\nname = "gate-qpu"\nslurm_gate = true\n'


def test_a_restarted_daemon_reconciles_its_reservations_and_leaves_others_alone(cluster: Cluster) -> None:
    hold_by_hand(cluster, "qrmid-site", "gate-qpu:1")  # the site's own: never touched
    hold_by_hand(cluster, "qrmid-gate-qpu", "gate-qpu:1")  # left behind, while the resource is online
    try:
        site = reservations(cluster)["qrmid-site"]
        text = f'[slurm]\nslurm_conf = "{cluster.dir / "etc" / "slurm.conf"}"\n{GATE_KEYS}\n{GATE_QPU}'
        with subprocess_daemon(text) as (address, process):
            wait_until(lambda: "qrmid-gate-qpu" not in reservations(cluster), "removed: the resource is online")
            admin_call(address, "DrainResource", admin_pb2.DrainResourceRequest(resource="gate-qpu"))
            wait_until(lambda: "qrmid-gate-qpu" in reservations(cluster), "reserved while drained")
            assert reservations(cluster)["qrmid-gate-qpu"]["Licenses"] == "gate-qpu:1", "what the site's leaves"
            job = cluster.sbatch("echo ran\n", "-L", "gate-qpu", "--time=5")
            assert pending_reason(cluster, job) == ("PENDING", "Licenses")
            process.kill()  # SIGKILL: the drain is journaled, the reservation stays
            process.wait()
        assert "qrmid-gate-qpu" in reservations(cluster)
        assert pending_reason(cluster, job) == ("PENDING", "Licenses"), "still held while no daemon runs"
        cluster.run("scancel", job)
        cluster.run("scontrol", "delete", "ReservationName=qrmid-gate-qpu")  # lost meanwhile
        socket = Path(address.removeprefix("unix:"))
        with serving(socket.parent / "qrmid.toml", address):
            wait_until(lambda: "qrmid-gate-qpu" in reservations(cluster), "made again for the drained resource")
            job = cluster.sbatch("echo ran\n", "-L", "gate-qpu", "--time=5")
            assert pending_reason(cluster, job) == ("PENDING", "Licenses")
            admin_call(address, "ResumeResource", admin_pb2.ResumeResourceRequest(resource="gate-qpu"))
            assert cluster.wait_job(job, {"COMPLETED", "FAILED", "CANCELLED"}).state == "COMPLETED"
            assert "qrmid-gate-qpu" not in reservations(cluster)
        assert reservations(cluster)["qrmid-site"] == site
    finally:
        cluster.run("scontrol", "delete", "ReservationName=qrmid-site", check=False)
        cluster.run("scontrol", "delete", "ReservationName=qrmid-gate-qpu", check=False)


def unit_gate(cluster: Cluster, debounce: float, conf: Path | None = None, retry: float = 0.3
              ) -> tuple[SlurmGate, Any]:
    """A gate over one online noop resource, ``gate-qpu``, talking to slurmctld with the real scontrol."""
    cfg = config([{"type": "noop", "name": "gate-qpu", "slurm_gate": True}])
    resource = build_resource(cfg, cfg.resources[0])
    resource.backend = BackendStatus(BackendState.ONLINE, "")
    resource.checked.set()
    gate = SlurmGate(lambda: {"gate-qpu": resource}, Scontrol(slurm_conf=conf or cluster.dir / "etc" / "slurm.conf"),
                     debounce=debounce, retry=retry, recheck=60)
    gate.configure({"gate-qpu": "gate-qpu"})
    return gate, resource


async def held(cluster: Cluster) -> dict[str, str] | None:
    return (await asyncio.to_thread(reservations, cluster)).get("qrmid-gate-qpu")


async def test_status_flaps_shorter_than_the_debounce_never_reach_slurmctld(cluster: Cluster) -> None:
    gate, resource = unit_gate(cluster, debounce=1.5)
    await gate.step()
    assert gate.views()[0].state == "open"
    for _ in range(3):  # drained and resumed within the debounce, again and again
        resource.drain("flapping")
        await gate.step()
        resource.resume()
        await gate.step()
        assert await held(cluster) is None
    resource.drain("calibration")
    await gate.step()
    assert await held(cluster) is None, "not before the status has held for the debounce"
    await asyncio.sleep(1.6)
    await gate.step()
    first = await held(cluster)
    assert first is not None and first["Licenses"] == "gate-qpu:2"
    resource.resume()  # back briefly: the reservation stays as it is
    await gate.step()
    await asyncio.sleep(0.5)
    resource.drain("calibration again")
    await gate.step()
    await asyncio.sleep(1.6)
    await gate.step()
    assert await held(cluster) == first, "never deleted and made again"
    resource.resume()
    await gate.step()
    await asyncio.sleep(1.6)
    await gate.step()
    assert await held(cluster) is None
    assert gate.views()[0].state == "open"


async def test_an_unreachable_slurmctld_is_retried(cluster: Cluster, tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    text = (cluster.dir / "etc" / "slurm.conf").read_text()
    conf.write_text("\n".join(f"SlurmctldPort={free_port()}" if line.startswith("SlurmctldPort=") else line
                              for line in text.splitlines()) + "\n")
    gate, resource = unit_gate(cluster, debounce=0, conf=conf, retry=2)
    resource.drain("calibration")
    try:
        await asyncio.wait_for(gate.step(), 60)
        view = gate.views()[0]
        assert view.state == "unknown" and "slurmctld" in view.detail, view
        assert await held(cluster) is None
        gate.scontrol = Scontrol(slurm_conf=cluster.dir / "etc" / "slurm.conf")  # slurmctld reachable again
        await gate.step()
        assert await held(cluster) is None, "not before the retry interval"
        await asyncio.sleep(2.1)
        await gate.step()
        assert await held(cluster) is not None
        assert (gate.views()[0].state, gate.views()[0].detail) == ("held", "draining: calibration")
    finally:
        await asyncio.to_thread(cluster.run, "scontrol", "delete", "ReservationName=qrmid-gate-qpu", check=False)


async def test_a_maintenance_window_holds_until_its_end(cluster: Cluster) -> None:
    gate, _ = unit_gate(cluster, debounce=0)
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    gate.unavailable_until("gate-qpu", end)  # the resource itself is online
    try:
        await gate.step()
        window = await held(cluster)
        assert window is not None
        assert datetime.fromisoformat(window["EndTime"]).astimezone(UTC) == end, "Slurm ends it by itself"
        assert gate.views()[0].detail == f"maintenance until {end.isoformat()}"
        await asyncio.to_thread(cluster.run, "scontrol", "delete", "ReservationName=qrmid-gate-qpu")  # ended early
        gate.unavailable_until("gate-qpu", None)
        await gate.step()
        assert await held(cluster) is None
        assert (gate.views()[0].state, gate.views()[0].detail) == ("open", ""), "a reservation gone is no fault"
    finally:
        await asyncio.to_thread(cluster.run, "scontrol", "delete", "ReservationName=qrmid-gate-qpu", check=False)


async def test_only_the_member_dispatching_a_resource_gates_it(cluster: Cluster) -> None:
    gate, resource = unit_gate(cluster, debounce=0)
    resource.scheduler.leading = False  # another cluster member dispatches it
    resource.drain("calibration")
    await gate.step()
    assert await held(cluster) is None
    assert gate.views()[0].state == "not managed here"
    resource.scheduler.leading = True  # elected: it gates from now on
    try:
        await gate.step()
        assert await held(cluster) is not None
        assert gate.views()[0].state == "held"
    finally:
        await asyncio.to_thread(cluster.run, "scontrol", "delete", "ReservationName=qrmid-gate-qpu", check=False)


def test_gating_turned_on_by_a_reload_holds_a_drained_resource_at_once(cluster: Cluster) -> None:
    slurm = f'[slurm]\nslurm_conf = "{cluster.dir / "etc" / "slurm.conf"}"\n{GATE_KEYS}\n'
    ungated = '[[resources]]\ntype = "noop"\nname = "gate-qpu"\n'
    with subprocess_daemon(slurm + ungated) as (address, _):
        admin_call(address, "DrainResource", admin_pb2.DrainResourceRequest(resource="gate-qpu", reason="tuning"))
        assert gates(address) == {}
        path = Path(address.removeprefix("unix:")).parent / "qrmid.toml"
        path.write_text(path.read_text().replace(ungated, GATE_QPU))
        try:
            answer = admin_call(address, "ReloadConfig", admin_pb2.ReloadConfigRequest())
            assert list(answer.changed) == ["gate-qpu"]
            wait_until(lambda: "qrmid-gate-qpu" in reservations(cluster), "reserved after the reload")
            gate = gates(address)["gate-qpu"]
            assert (gate.state, gate.detail) == ("held", "draining: tuning")
        finally:
            cluster.run("scontrol", "delete", "ReservationName=qrmid-gate-qpu", check=False)


@pytest.mark.parametrize(("text", "message"), [
    ('[slurm]\ngate_debounce_seconds = -1\n', "key 'slurm.gate_debounce_seconds': must be at least 0 and at most 600"),
    ('[slurm]\ngate_retry_seconds = 0\n', "key 'slurm.gate_retry_seconds': must be at least 0.1 and at most 3600"),
    (GATE_QPU + 'slurm_license = "a,b"\n', "key 'resources[0].slurm_license': String should match pattern"),
])
def test_gate_settings_are_checked_when_the_config_is_loaded(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert message in str(refused.value)
