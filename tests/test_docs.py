"""Every fenced block of README.md and docs/*.md runs as written, page by page, the way a reader goes through it.

- ``sh``/``bash``/``console`` and ``python`` blocks run in order, as root, in one scratch copy of the tree per page,
  with the venv's bin on PATH and the page's own daemon (unless the page starts one) serving on the default
  socket, which ``QRMID_ADDRESS`` names. The default and site paths are the pages' own: /run, /etc, /var/lib and
  /opt are overlaid for them in a private mount namespace (writes land in the scratch dir) and /run/qrmid,
  /etc/qrmid and /var/lib/qrmid are scratch dirs mounted there, so the machine's own are never touched.
- ``toml`` blocks are loaded by qrmid's own config loader (a fragment such as one ``[[resources]]`` table is a
  config whose other sections take their defaults), or by the tokens-file loader for ``[[token]]`` tables;
  ``json`` blocks are parsed; ``ini``/``systemd`` blocks go through ``systemd-analyze verify``; ``c`` blocks
  through ``cc -fsyntax-only`` against the C stubs; ``promql`` queries must name metrics the daemon exports (no
  PromQL parser is installed: Prometheus's promtool comes only in a 96 MB Debian package).
- ``text`` blocks are output shown to readers and are not run; a block without a language fails.
- grpcurl blocks run the real grpcurl, installed into the venv with the test extras.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from daemons import ROOT, short_dir, wait_serving
from munged import munged

from qrmid.ops.paths import SYSTEM_SOCKET

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"sh", "bash", "shell", "console"}
CHECKED = SHELLS | {"python", "toml", "json", "ini", "systemd", "c", "promql"}
VENV_BIN = Path(sys.executable).parent
OVERLAID = ("run", "etc", "var/lib", "opt")  # written by pages into the scratch dir
METRICS = "127.0.0.1:9464"  # in the page's own network namespace, as in operations.md
SCRAPE = f"import urllib.request; print(urllib.request.urlopen('http://{METRICS}/metrics', timeout=30).read().decode())"
PRIVATE = {Path("/run/qrmid"): "run-qrmid", Path("/etc/qrmid"): "etc-qrmid", Path("/var/lib/qrmid"): "var-lib-qrmid"}

# Blocks that are not run, each with its reason: (page, a text the block contains) -> why. Keep it short.
NOT_RUN = {
    ("README.md", "make demo"): "`make test` is this test run itself; tests/test_demo.py runs `make demo`",
    ("README.md", "systemctl daemon-reload"): "installs into /opt and /etc and enables a systemd service: the test "
                                              "machine has no systemd running as PID 1 (tests/test_systemd.py "
                                              "checks the unit, tests/test_config_tooling.py the config it "
                                              "installs)",
    ("docs/python.md", "srun --qpu"): "needs slurmd with the SPANK plugin: tests/slurm/ runs jobs with --qpu on the "
                                      "one-node test cluster, tests/test_qrmi_dropin.py the task runner with the "
                                      "variables the plugin exports",
}

# A shared node as in security.md: users over the socket with MUNGE, services over TCP with TLS and tokens, from
# the host name in the daemon's certificate (qrmid.example.org, resolved to the page's own loopback).
SHARED_NODE = ('auth = "munge"\nsocket_mode = "0666"\ntcp = "0.0.0.0:50051"\ntcp_auth = "token"\n'
               'tls_cert = "/etc/qrmid/tls/qrmid.pem"\ntls_key = "/etc/qrmid/tls/qrmid.key"\n')
HOST = "qrmid.example.org"
SERVICE_TOKEN = "0d9c4f1ab7e25386c4e0f9a1d2b37c68"

# QRMI's config format, for the pages that import one (an IBM Quantum System entry, as the SPANK plugin reads it).
QRMI_CONFIG = {"resources": [{"name": "ibm_torino", "type": "ibm-quantum-system", "environment": {
    "QRMI_IBM_QS_ENDPOINT": "https://qs.example.org", "QRMI_IBM_QS_IAM_ENDPOINT": "https://iam.cloud.ibm.com",
    "QRMI_IBM_QS_IAM_APIKEY": "apikey-example", "QRMI_IBM_QS_SERVICE_CRN": "crn:v1:example",
    "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "key-id", "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": "secret",
    "QRMI_IBM_QS_S3_ENDPOINT": "https://s3.example.org", "QRMI_IBM_QS_S3_BUCKET": "jobs",
    "QRMI_IBM_QS_S3_REGION": "us-east-1"}}]}

# A TOML block is a tokens file when it has [[token]] tables, else a config.
TOML_CHECK = """import sys, tomllib
from pathlib import Path
from qrmid.api.auth import AuthSetupError, load_tokens
from qrmid.ops.config import ConfigError, load
path = Path(sys.argv[1])
try:
    (load_tokens if "token" in tomllib.loads(path.read_text()) else load)(path)
except (AuthSetupError, ConfigError) as exc:
    sys.exit(f"refused: {exc}")
"""


@dataclass(frozen=True)
class Block:
    page: str  # relative to the tree, e.g. docs/admin.md
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def not_run(self) -> str | None:
        return next((why for (page, marker), why in NOT_RUN.items() if page == self.page and marker in self.text),
                    None)


@dataclass(frozen=True)
class Setup:
    """What a page expects to find: its daemon's [daemon] and [auth] keys (its resources are always the embedded
    default's: a page sets up anything else it uses itself), or no daemon at all when the page starts its own; a
    munged; a metrics endpoint; TLS and tokens for services over TCP."""

    own_daemon: bool = False
    daemon_keys: str = ""
    auth_keys: str = ""
    munge: bool = False
    metrics: bool = False
    tls: bool = False


SETUPS = {
    "README.md": Setup(own_daemon=True),
    "docs/operations.md": Setup(metrics=True),
    "docs/security.md": Setup(daemon_keys=SHARED_NODE, auth_keys='tokens_file = "/etc/qrmid/tokens.toml"\n',
                              munge=True, tls=True),
}


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the line of their opening fence."""
    blocks, lines, index = [], path.read_text().splitlines(), 0
    while index < len(lines):
        opening = re.match(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)", lines[index])
        if opening:
            indent, fence, lang = len(opening[1]), opening[2], opening[3].lower()
            start, body = index, []
            index += 1
            while index < len(lines) and not lines[index].strip().startswith(fence):
                body.append(lines[index][indent:])
                index += 1
            blocks.append(Block(str(path.relative_to(ROOT)), start + 1, lang, "\n".join(body) + "\n"))
        index += 1
    return blocks


BLOCKS = [block for path in DOCS for block in fenced_blocks(path) if block.lang != "text"]


@dataclass
class Page:
    """One page's scratch dir and private mounts; the commands of its blocks run in order in them."""

    page: str
    setup: Setup
    munge_socket: Path | None
    scratch: Path = field(default_factory=short_dir)
    groups: list[subprocess.Popen[bytes]] = field(default_factory=list)  # each leads a process group
    daemon: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.src = self.scratch / "qrmid"
        shutil.copytree(ROOT, self.src, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis"))
        for directory in ("home", "bin", *(f"{part}/{tree}" for part in ("upper", "work") for tree in OVERLAID),
                          *PRIVATE.values()):
            (self.scratch / directory).mkdir(parents=True, exist_ok=True)
        (self.scratch / "upper/etc/slurm").mkdir()
        if self.setup.tls:
            (self.scratch / "upper/etc/hosts").write_text(Path("/etc/hosts").read_text() + f"127.0.0.1 {HOST}\n")
        qrmi_config = self.scratch / "upper/etc/slurm/qrmi_config.json"
        qrmi_config.touch(mode=0o600)  # it holds credentials
        qrmi_config.write_text(json.dumps(QRMI_CONFIG, indent=2))
        self.env = {"PATH": f"{self.scratch / 'bin'}:{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                            "/sbin:/bin", "HOME": str(self.scratch / "home"), "LANG": "C.UTF-8",
                    "QRMID_ADDRESS": f"unix:{SYSTEM_SOCKET}"}
        if self.munge_socket is not None:
            self.env["QRMID_MUNGE_SOCKET"] = str(self.munge_socket)
        mounts = ["ip link set lo up"]
        mounts += [f"mount -t overlay overlay -o lowerdir=/{tree},upperdir={self.scratch}/upper/{tree},"
                  f"workdir={self.scratch}/work/{tree} /{tree}" for tree in OVERLAID]
        mounts += [f"mkdir -p {path} && mount --bind {self.scratch / mine} {path}" for path, mine in PRIVATE.items()]
        self.holder = subprocess.Popen(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-ec",
                                        " && ".join(mounts) + " && echo ready && exec sleep 86400"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True)
        assert self.holder.stdout is not None and self.holder.stderr is not None
        if self.holder.stdout.readline() != b"ready\n":
            self.holder.wait()
            pytest.fail(f"cannot set up the page's mounts and network: {self.holder.stderr.read().decode()}")

    def private(self, path: Path) -> Path:
        """Where the test, outside the page's mounts, reaches ``path`` of the page (under a private mount)."""
        mount = next(mount for mount in PRIVATE if path.is_relative_to(mount))
        return self.scratch / PRIVATE[mount] / path.relative_to(mount)

    def spawn(self, argv: list[str], output: Path) -> subprocess.Popen[bytes]:
        """``argv`` in the page's mounts and tree, in a process group of its own (stopped with the page)."""
        with output.open("ab") as sink:
            enter = ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", f"--wd={self.src}", "--"]
            process = subprocess.Popen([*enter, *argv], env=self.env, stdin=subprocess.DEVNULL, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.append(process)
        return process

    def run(self, argv: list[str], name: str, timeout: float = 300) -> tuple[int, str]:
        """``argv`` run to its end as the reader would; its exit code and output."""
        output = self.scratch / f"{name}.out"
        process = self.spawn(argv, output)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = -9
        return code, output.read_text(errors="replace")

    def ensure_daemon(self) -> None:
        """The page's daemon, on the default socket and journal (under the page's mounts), unless the page
        starts its own."""
        if self.daemon is not None or self.setup.own_daemon:
            return
        auth = self.setup.auth_keys + (f'munge_socket = "{self.munge_socket}"\n' if self.munge_socket else "")
        sections = f"[auth]\n{auth}"
        if self.setup.metrics:
            sections += f'[metrics]\naddress = "{METRICS}"\n'
        if self.setup.tls:
            self.tls_site()
        path = self.private(Path("/etc/qrmid/qrmid.toml"))
        path.touch(mode=0o600)
        path.write_text(f"[daemon]\nshutdown_grace_seconds = 2\n{self.setup.daemon_keys}{sections}")
        self.daemon = self.spawn(["qrmid", "serve", "--config", "/etc/qrmid/qrmid.toml"], self.scratch / "daemon.log")
        address = f"unix:{self.private(SYSTEM_SOCKET)}"
        try:
            wait_serving(address, process=self.daemon)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{self.page}: its daemon did not start ({exc}):\n{(self.scratch / 'daemon.log').read_text()}")

    def tls_site(self) -> None:
        """The daemon's certificate for HOST from a CA, its tokens file, and a service's token file and CA bundle."""
        tls = self.private(Path("/etc/qrmid/tls"))
        tls.mkdir()
        now = datetime.datetime.now(datetime.UTC)
        valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(valid[0]).not_valid_after(valid[1])
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
                  .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                  .not_valid_before(valid[0]).not_valid_after(valid[1])
                  .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
                  .sign(ca_key, hashes.SHA256()))
        (tls / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (tls / "qrmid.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
        secrets = {tls / "qrmid.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()),
                   self.private(Path("/etc/qrmid/tokens.toml")):
                       f'[[token]]\nname = "portal"\ntoken = "{SERVICE_TOKEN}"\n'.encode(),
                   self.scratch / "home/.qrmid-token": SERVICE_TOKEN.encode()}
        for path, content in secrets.items():
            path.touch(mode=0o600)
            path.write_bytes(content)

    def close(self) -> None:
        for group in self.groups:  # the daemon and what the page's commands left running, e.g. `qrmid serve &`
            if _alive(group):
                os.killpg(group.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for group in self.groups:
            while time.monotonic() < deadline and _alive(group):
                time.sleep(0.1)
            if _alive(group):
                os.killpg(group.pid, signal.SIGKILL)
        self.holder.kill()
        self.holder.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _alive(group: subprocess.Popen[bytes]) -> bool:
    """Whether a process of the group is still running (its leader reaped first, so that no zombie counts)."""
    group.poll()
    try:
        os.killpg(group.pid, 0)
    except ProcessLookupError:
        return False
    return True


class Pages:
    """Each page's state, made on its first block and kept for the next ones; a page is closed when the next
    begins."""

    def __init__(self, munge_socket: Path) -> None:
        self.munge_socket = munge_socket
        self.open: Page | None = None

    def __getitem__(self, name: str) -> Page:
        if self.open is None or self.open.page != name:
            self.close()
            setup = SETUPS.get(name, Setup())
            self.open = Page(name, setup, self.munge_socket if setup.munge else None)
        return self.open

    def close(self) -> None:
        if self.open is not None:
            self.open.close()
            self.open = None


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    if os.geteuid() != 0:
        pytest.fail("run as root: the pages' commands run with the site's paths mounted privately for them")
    with munged() as munge_socket:
        opened = Pages(munge_socket)
        try:
            yield opened
        finally:
            opened.close()


def shell_script(block: Block) -> str:
    if block.lang != "console":
        return block.text
    commands, continued = [], False  # `$ ` lines and their continuations; the rest is output
    for line in block.text.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line.removeprefix("$ "))
            continued = line.endswith("\\")
    return "\n".join(commands) + "\n"


def run_shell(page: Page, block: Block) -> None:
    page.ensure_daemon()
    script = page.scratch / f"block-{block.line}.sh"
    script.write_text(shell_script(block))
    code, output = page.run(["bash", "-e", "-o", "pipefail", str(script)], f"block-{block.line}")
    assert code == 0, f"{block.id} exited with {code}:\n{output[-4000:]}"


def run_python(page: Page, block: Block) -> None:
    page.ensure_daemon()
    script = page.scratch / f"block-{block.line}.py"
    script.write_text(block.text)
    code, output = page.run(["python", str(script)], f"block-{block.line}")
    assert code == 0, f"{block.id} exited with {code}:\n{output[-4000:]}"


def check_toml(page: Page, block: Block) -> None:
    """Loaded with qrmid's loaders in the page's mounts (a config may name files there, e.g. a qrmi_config)."""
    path = page.scratch / f"block-{block.line}.toml"
    path.touch(mode=0o600)
    path.write_text(block.text)
    code, output = page.run(["python", "-c", TOML_CHECK, str(path)], f"block-{block.line}")
    assert code == 0, f"{block.id}: {output[-4000:]}"


def check_promql(page: Page, block: Block) -> None:
    """Every metric a query names is one the daemon exports (histograms through their series)."""
    page.ensure_daemon()
    assert page.setup.metrics, f"{block.id}: give {page.page} a metrics endpoint in SETUPS"
    code, exposition = page.run(["python", "-c", SCRAPE], f"block-{block.line}")
    assert code == 0, f"{block.id}: cannot scrape the daemon's metrics: {exposition[-2000:]}"
    known = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        known |= {name, f"{name}_total"} if kind == "counter" else {name}
        if kind == "histogram":
            known |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    named = set(re.findall(r"\bqrmid_\w+", block.text))
    assert named, f"{block.id}: no qrmid metric in the queries"
    assert named <= known, f"{block.id}: not exported by qrmid: {sorted(named - known)}"


def check_systemd(page: Page, block: Block) -> None:
    unit = page.scratch / f"docs-block-{block.line}.service"
    unit.write_text(block.text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, f"{block.id}: {result.stderr}"


def check_c(page: Page, block: Block) -> None:
    flags = subprocess.run(["pkg-config", "--cflags", "libprotobuf-c", "grpc"], capture_output=True, text=True,
                           check=True).stdout.split()
    stubs = ROOT / "stubs/c"
    result = subprocess.run(["cc", "-fsyntax-only", "-x", "c", "-", f"-I{stubs / 'runtime'}",
                             f"-I{stubs / 'generated'}", *flags], input=block.text, capture_output=True, text=True)
    assert result.returncode == 0, f"{block.id}: {result.stderr}"


CHECKS = {"python": run_python, "toml": check_toml, "promql": check_promql, "ini": check_systemd,
          "systemd": check_systemd, "c": check_c, **dict.fromkeys(SHELLS, run_shell)}


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block_runs_as_written(block: Block, pages: dict[str, Page]) -> None:
    assert block.lang in CHECKED, (f"{block.id}: a block without a known language ({block.lang or 'none'}): "
                                   f"mark code with its language, and output shown to readers as ```text")
    reason = block.not_run()
    if reason is not None:
        pytest.skip(f"not run: {reason}")
    if block.lang == "json":
        json.loads(block.text)
        return
    CHECKS[block.lang](pages[block.page], block)


def test_every_block_not_run_is_still_in_the_docs() -> None:
    for page, marker in NOT_RUN:
        found = [block.id for block in BLOCKS if block.page == page and marker in block.text]
        assert len(found) == 1, f"NOT_RUN entry ({page!r}, {marker!r}) matches {found or 'no block'}"


def test_every_fence_opens_or_closes_a_block_the_test_reads() -> None:
    for path in DOCS:
        fences = sum(1 for line in path.read_text().splitlines() if re.match(r"\s*(`{3,}|~{3,})", line))
        assert fences == 2 * len(fenced_blocks(path)), f"{path.name}: a fence the test does not pair up"


def test_no_block_leaves_anything_out() -> None:
    """What a block shows is all there is to run: no '...' standing for code or values left out (comments may
    shorten the output they show)."""
    code = {block.id: [line.split("#", 1)[0] for line in block.text.splitlines()] for block in BLOCKS}
    elided = [name for name, lines in code.items() if any("..." in line or "\u2026" in line for line in lines)]
    assert not elided, f"blocks with '...' in place of what a reader must write: {elided}"
