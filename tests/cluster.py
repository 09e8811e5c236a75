"""A cluster of real qrmid members for tests: ``qrmid serve`` processes named m1, m2, ... sharing one fresh
PostgreSQL database (``[cluster]``), each with its own Unix socket, journal path (the payload spool sits beside
it), log file, a TCP listener (service-token auth, the token an admin's) and a metrics endpoint, each on a free
loopback port.

    with Cluster(database, resources_toml, members=3, tmp=tmp_path) as cluster:
        Client(cluster.address)          # every member's socket, for failover
        cluster.kill("m1"); cluster.start("m1")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from daemons import ROOT, short_dir, write_config
from postgres import Database
from test_identity import free_port
from test_postgres_store import password_file

from qrmid.bench.process import QrmidProcess

TOKEN = "cluster-admin-token-3b8e51c07f2d49a6"


class Member(QrmidProcess):
    """One member: its name, sockets and config; ``log`` collects what it prints (at debug level) across runs."""

    def __init__(self, name: str, config: Path, socket: Path, tcp: str, metrics: str, log: Path) -> None:
        super().__init__(config, socket, cwd=ROOT, output=log)
        self.name = name
        self.tcp = tcp  # HOST:PORT of its TCP listener (token auth: ``Cluster.token_file``)
        self.metrics = f"http://{metrics}/metrics"
        self.log = log

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """``members`` members on ``database``, all serving ``resources`` (``[[resources]]`` TOML) unless ``own``
    gives a member its own text (e.g. ``dispatch = false`` on one); configs and logs under ``tmp``. Entering
    starts them one after another, m1 first, each once it serves; leaving stops every one still running."""

    def __init__(self, database: Database, resources: str, members: int = 2, tmp: Path | None = None,
                 own: Mapping[str, str] | None = None, users: Sequence[str] = ()) -> None:
        names = [f"m{n}" for n in range(1, members + 1)]
        unknown = set(own or {}) - set(names)
        if unknown:
            raise ValueError(f"no such member(s) {sorted(unknown)}: the members are {names}")
        root = tmp or short_dir()
        self.database = database
        self.token_file = write_config(root / "token", TOKEN + "\n")
        self.user_token_files = {user: write_config(root / f"token-{user}", f"{TOKEN}-{user}\n") for user in users}
        tokens = write_config(root / "tokens.toml", f'[[token]]\nname = "ops"\ntoken = "{TOKEN}"\nadmin = true\n' + "".join(
            f'[[token]]\nname = "{user}"\ntoken = "{TOKEN}-{user}"\n' for user in users))
        secret = password_file(database)
        self._members: dict[str, Member] = {}
        for name in names:
            home = root / name
            home.mkdir(parents=True, exist_ok=True)
            socket = short_dir() / "qrmid.sock"  # Unix socket paths are limited to 107 bytes
            tcp, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            text = (f'[daemon]\nsocket = "{socket}"\ntcp = "{tcp}"\ntcp_auth = "token"\n'
                    f'shutdown_grace_seconds = 2\nlog_level = "debug"\n'
                    f'[auth]\ntokens_file = "{tokens}"\n'
                    f'[journal]\npath = "{home / "journal.db"}"\n'
                    f'[cluster]\ndsn = "{database.dsn}"\npassword_file = "{secret}"\nmember = "{name}"\n'
                    'connect_timeout_seconds = 2\n'
                    f'[metrics]\naddress = "{metrics}"\n[limits]\ncalls_per_second = 0\nstreams_per_client = 0\n'
                    f'{(own or {}).get(name, resources)}\n')
            self._members[name] = Member(name, write_config(home / "qrmid.toml", text), socket, tcp, metrics,
                                         home / "qrmid.log")

    @property
    def names(self) -> list[str]:
        return list(self._members)

    @property
    def tcp_address(self) -> str:
        """Every member's TCP listener, comma-separated (token auth: ``token_file`` or ``user_token_files``)."""
        return ",".join(member.tcp for member in self._members.values())

    @property
    def address(self) -> str:
        """Every member's Unix socket, comma-separated, as ``QRMID_ADDRESS`` and the clients take it."""
        return ",".join(member.address for member in self._members.values())

    def member(self, name: str) -> Member:
        return self._members[name]

    def start(self, name: str) -> None:
        """Start (or restart) ``name``; returns once it serves (RuntimeError when it exits first)."""
        member = self._members[name]
        if member.running:
            raise RuntimeError(f"member {name} is running already")
        try:
            member.start()
        except RuntimeError as exc:
            raise RuntimeError(f"member {name}: {exc}; its log:\n{member.log.read_text()[-4000:]}") from None

    def stop(self, name: str) -> None:
        """SIGTERM, and wait for it to exit (SIGKILL after a minute)."""
        self._members[name].stop()

    def kill(self, name: str) -> None:
        """SIGKILL, and wait for it to exit: no shutdown code runs."""
        self._members[name].kill()

    def __enter__(self) -> Self:
        try:
            for name in self._members:
                self.start(name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop every member still running."""
        for member in self._members.values():
            member.stop()
