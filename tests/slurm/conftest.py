"""A real one-node Slurm cluster (munged, slurmctld, slurmd from Debian) with spank_qrmid.so in its
plugstack (auth=munge), and a qrmid daemon the jobs use, authenticating every caller with the cluster's
munged (auth = "munge", socket mode 0666). The daemons run as root in a temporary directory, on 127.0.0.1
and Unix sockets, and are stopped by PID at the end of the session; jobs run as root or as the users
qrmid-alice and qrmid-bob (created when missing, removed at the end)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from daemons import ROOT, short_dir, subprocess_daemon
from system_users import system_users

from qrmid.client import Client
from qrmid.client_auth import MUNGE_METADATA, ClientAuth
from qrmid.ops import munge
from qrmid.v1 import admin_pb2, admin_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

APT_PACKAGES = ("slurmctld slurmd slurm-client munge libslurm-dev gcc make pkg-config libgrpc-dev "
                "libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev")
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel", "sinfo", "squeue",
         "cc", "make", "pkg-config")

VENDOR_SECRET = "slurm-vendor-secret-9d41c7e2"  # a distinctive value: finding it anywhere is a leak

USERS = ("qrmid-alice", "qrmid-bob")  # the same users as tests/test_multiuser.py

# The qrmid the jobs talk to: every user may open its socket and is who munged proves (subprocess_daemon opens
# the [daemon] table with its socket). Leases are required, so a task only runs with the job's token;
# "slow-qpu" holds its one slot for minutes without using CPU, for the scancel tests; its Slurm license is gated
# (held while it is drained, test_slurm_gate.py).
QRMID_CONFIG = """
auth = "munge"
socket_mode = "0666"

[auth]
munge_socket = "{munge_socket}"

[slurm]
slurm_conf = "{slurm_conf}"
gate_debounce_seconds = 0.5
gate_retry_seconds = 1

[leases]
required = true
max_ttl_seconds = 86400

[[resources]]
type = "local-qiskit"
name = "local-qiskit"
slots = 1
max_qubits = 8

[[resources]]
type = "noop"
name = "slow-qpu"
slots = 1
delay_seconds = 600
slurm_gate = true

# Holds a vendor secret (its service is unreachable): the jobs must never see it.
[[resources]]
type = "pasqal-cloud"
name = "vendor-qpu"
QRMI_PASQAL_CLOUD_PROJECT_ID = "slurm-tests"
QRMI_PASQAL_CLOUD_BASE_URL = "http://127.0.0.1:9"
QRMI_PASQAL_CLOUD_AUTH_ENDPOINT = "http://127.0.0.1:9/oauth/token"
QRMI_PASQAL_CLOUD_CLIENT_ID = "qrmid-slurm-node"
QRMI_PASQAL_CLOUD_CLIENT_SECRET = "{vendor_secret}"
"""

TTL_MARGIN = 120  # plugstack ttl_margin: a lease lives the job's time limit plus this


def require_tools() -> None:
    """Fail (never skip) when the cluster cannot be built here."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not Path("/usr/include/slurm/spank.h").exists():
        missing.append("/usr/include/slurm/spank.h")
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; install with: apt-get install {APT_PACKAGES}")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.fail("missing useradd or userdel; install with: apt-get install passwd")
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests start slurmctld, slurmd and munged, create users and run jobs as them: "
                    "run them as root")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_make(*args: str) -> None:
    proc = subprocess.run(["make", "--no-print-directory", f"PYTHON={sys.executable}", *args],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"make {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@dataclass
class Job:
    """A job as `scontrol show job` reports it."""

    id: str
    fields: dict[str, str]

    @property
    def state(self) -> str:
        return self.fields.get("JobState", "")

    @property
    def reason(self) -> str:
        return self.fields.get("Reason", "")


@dataclass
class Cluster:
    """The running cluster: its directory, the client environment and helpers to drive jobs."""

    dir: Path
    env: dict[str, str]
    node: str
    qrmid_address: str
    munge_socket: Path
    plugin: Path
    c_example: Path
    ttl_margin: int = TTL_MARGIN
    vendor_secret: str = VENDOR_SECRET  # in the daemon's config; must never reach a job
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def client(self) -> Client:
        """A client of the jobs' qrmid as root (an admin), proving it with the cluster's munged."""
        return Client(self.qrmid_address, auth=ClientAuth("munge", str(self.munge_socket)))

    def leases(self, job_id: str) -> list[pb.Lease]:
        """Every user's live leases of Slurm job ``job_id``, as AdminService.ListAllLeases shows them to root."""
        credential = munge.encode(b"", str(self.munge_socket))
        with grpc.insecure_channel(self.qrmid_address) as channel:
            answer = admin_pb2_grpc.AdminServiceStub(channel).ListAllLeases(
                admin_pb2.ListAllLeasesRequest(), metadata=[(MUNGE_METADATA, credential)], timeout=30)
        return [lease for lease in answer.leases if lease.slurm_job_id == job_id]

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sbatch(self, script: str, *options: str, chdir: Path = ROOT) -> str:
        """Submits ``script`` (bash) to run in ``chdir`` (the repository root by default); returns the job id."""
        path = self.out / f"script-{time.monotonic_ns()}.sh"
        path.write_text("#!/bin/bash\nset -eu\n" + script)
        proc = self.run("sbatch", "--parsable", f"--chdir={chdir}", f"--output={self.out}/%j.out", *options, str(path))
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> Job:
        text = self.run("scontrol", "show", "job", "-o", job_id).stdout.strip()
        fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
        return Job(job_id, fields)

    def wait_job(self, job_id: str, states: set[str], timeout: float = 60) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {job.state} ({job.reason}), not {states}, after {timeout} s; "
                                     f"output:\n{self.output(job_id)}")
            time.sleep(0.2)

    def wait_for(self, path: Path, job_id: str = "", timeout: float = 60) -> None:
        """Until ``path`` exists; on timeout, the failure shows the job's state and output."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                detail = f" (job {job_id} {self.job(job_id).state}; output:\n{self.output(job_id)})" if job_id else ""
                raise AssertionError(f"{path} did not appear within {timeout} s{detail}")
            time.sleep(0.1)

    def output(self, job_id: str) -> str:
        path = self.out / f"{job_id}.out"
        return path.read_text() if path.exists() else "(no output file)"

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%T").stdout.strip()

    def wait_idle(self, timeout: float = 30) -> str:
        """The node's state once it is idle again (or whatever it is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while (state := self.node_state()) != "idle" and time.monotonic() < deadline:
            time.sleep(0.2)
        return state

    def stop(self) -> None:
        """Ends leftover jobs, then stops slurmd and slurmctld by PID."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            jobs = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()  # every user's
            if jobs:
                self.run("scancel", "--full", *jobs, check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld"):
            if name in self.daemons:
                terminate(self.daemons[name])


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s, by PID."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def wait_for(path: Path, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s {what}")
        time.sleep(0.1)


def slurm_conf(d: Path, node: str, plugstack: Path) -> str:
    """slurm.conf for one node on 127.0.0.1 with a local-qiskit license (docs: slurm/README.md)."""
    return f"""\
ClusterName=qrmidtest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.socket
StateSaveLocation={d}/state/ctld
SlurmdSpoolDir={d}/state/d
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=debug
PlugStackConfig={plugstack}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=2
Licenses=local-qiskit:1,slow-qpu:2,gate-qpu:2,gate_ibm:1,excl-qpu:2
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """spank_qrmid.so and the C example, built with -Wall -Wextra -Werror into temp dirs."""
    require_tools()
    build = tmp_path_factory.mktemp("slurm-build")
    run_make("-C", str(ROOT / "slurm"), f"BUILDDIR={build / 'plugin'}")
    run_make("-C", str(ROOT / "stubs" / "c"), f"BUILDDIR={build / 'c'}", str(build / "c" / "qrmid_example"))
    return build / "plugin" / "spank_qrmid.so", build / "c" / "qrmid_example"


@pytest.fixture(scope="session")
def users() -> Iterator[tuple[str, ...]]:
    """System users without home directories for jobs; removed at the end when this fixture created them."""
    require_tools()
    with system_users(USERS) as names:
        yield names


@pytest.fixture(scope="session")
def cluster_dir() -> Iterator[Path]:
    """The cluster's directory: config, state, logs, munged's key and socket, and the jobs' output."""
    require_tools()
    d = short_dir()
    for sub in ("munge", "log", "state/ctld", "state/d", "run", "etc", "out"):
        (d / sub).mkdir(parents=True)
    os.chmod(d, 0o755)
    os.chmod(d / "munge", 0o755)  # munged refuses a socket directory others cannot traverse
    os.chmod(d / "out", 0o1777)  # jobs of every user write their output here
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def munge_socket(cluster_dir: Path) -> Iterator[Path]:
    """The cluster's munged (Slurm and qrmid share it); its socket."""
    d, logs = cluster_dir / "munge", cluster_dir / "log"
    subprocess.run(["mungekey", "-c", "-k", str(d / "munge.key")], check=True, capture_output=True)
    process = subprocess.Popen(
        ["munged", "-F", f"--key-file={d}/munge.key", f"--socket={d}/munge.socket", f"--pid-file={d}/munged.pid",
         f"--log-file={logs}/munged.log", f"--seed-file={d}/munged.seed"],
        stdout=subprocess.DEVNULL, stderr=(logs / "munged.stderr").open("wb"))
    try:
        wait_for(d / "munge.socket", 30, "(munged)")
        yield d / "munge.socket"
    finally:
        terminate(process)


@pytest.fixture(scope="session")
def qrmid_address(cluster_dir: Path, munge_socket: Path, users: tuple[str, ...]) -> Iterator[str]:
    """A qrmid subprocess serving local-qiskit, slow-qpu and vendor-qpu to every local user, with MUNGE."""
    config = QRMID_CONFIG.format(munge_socket=munge_socket, vendor_secret=VENDOR_SECRET,
                                 slurm_conf=cluster_dir / "etc" / "slurm.conf")
    with subprocess_daemon(config) as (address, _):
        scratch = Path(address.removeprefix("unix:")).parent
        os.chmod(scratch, 0o711)  # others may reach the socket (mode 0666), not list or read the rest
        yield address
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(builds: tuple[Path, Path], cluster_dir: Path, munge_socket: Path, qrmid_address: str) -> Iterator[Cluster]:
    plugin, c_example = builds
    d = cluster_dir
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    plugstack = d / "etc" / "plugstack.conf"
    plugstack.write_text(f"required {plugin} address={qrmid_address} timeout=20 ttl_margin={TTL_MARGIN} "
                         f"auth=munge munge_socket={munge_socket}\n")
    conf = d / "etc" / "slurm.conf"
    conf.write_text(slurm_conf(d, node, plugstack))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for name in list(env):
        if name.startswith(("SLURM_", "QRMI", "SBATCH_", "SRUN_")) and name != "SLURM_CONF":
            del env[name]
    cluster = Cluster(d, env, node, qrmid_address, munge_socket, plugin, c_example)
    logs = d / "log"
    try:
        cluster.daemons["slurmctld"] = subprocess.Popen(
            ["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
            stdout=subprocess.DEVNULL, stderr=(logs / "slurmctld.stderr").open("wb"))
        cluster.daemons["slurmd"] = subprocess.Popen(
            ["slurmd", "-D", "-f", str(conf), "-N", node], env=env,
            stdout=subprocess.DEVNULL, stderr=(logs / "slurmd.stderr").open("wb"))
        deadline = time.monotonic() + 60
        while cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() != "idle":
            for name, process in cluster.daemons.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited with {process.returncode}; see {logs}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the node is not idle after 60 s; see {logs}")
            time.sleep(0.25)
        yield cluster
    finally:
        cluster.stop()
