"""A private PostgreSQL server: Debian's PostgreSQL initialised into a fresh temporary directory, run as the
``postgres`` system user when started by root (initdb refuses root), else as the caller, on a private Unix socket
directory and a free loopback port, with password (SCRAM) authentication only. The tests start one per session;
the cluster benchmarks start one when given no database."""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

BIN = max(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]),
          default=Path("/usr/lib/postgresql/15/bin/initdb")).parent  # Debian's layout; 15 on bookworm
SYSTEM_USER = "postgres"  # the Debian package's server account: the server's user when root starts it
ROLE = "qrmid"  # the role the daemon connects as


@dataclass
class Database:
    """One fresh database: its libpq DSN (without the password) and the password of ``ROLE``."""

    server: PostgresServer
    dsn: str
    password: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, password=self.password, autocommit=True)


class PostgresServer:
    """A PostgreSQL cluster in its own directory; ``start``/``stop`` may be repeated (tests stop it mid-run)."""

    def __init__(self, fsync: bool = False) -> None:
        self.fsync = fsync  # off for tests: faster, and nothing has to survive a crash of the machine
        self.root = Path(tempfile.mkdtemp(prefix="pg"))
        self.as_root = os.geteuid() == 0
        account = pwd.getpwnam(SYSTEM_USER) if self.as_root else pwd.getpwuid(os.geteuid())
        os.chown(self.root, account.pw_uid, account.pw_gid)
        self.data = self.root / "data"
        self.sockets = self.root  # short: Unix socket paths are limited to 107 bytes
        self.port = _free_port()
        self.superuser_password = secrets.token_urlsafe(16)
        self.role_password = secrets.token_urlsafe(16)
        self._names = itertools.count()
        pwfile = self.root / "pw"
        pwfile.write_text(self.superuser_password + "\n")
        os.chown(pwfile, account.pw_uid, account.pw_gid)
        self._run(BIN / "initdb", "-D", self.data, "-U", SYSTEM_USER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
                  "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        pwfile.unlink()

    def _run(self, *args: object) -> None:
        user = SYSTEM_USER if self.as_root else None
        done = subprocess.run([str(arg) for arg in args], user=user, group=user, extra_groups=[] if user else None,
                              capture_output=True, text=True, cwd=self.root, timeout=120, check=False)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        options = f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync={'on' if self.fsync else 'off'}"
        self._run(BIN / "pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.root / "server.log",
                  "-o", options)

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended, as when the database server goes away."""
        self._run(BIN / "pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", self.data)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self, dbname: str, user: str = ROLE) -> str:
        return f"host={self.sockets} port={self.port} dbname={dbname} user={user}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn("postgres", SYSTEM_USER), password=self.superuser_password, autocommit=True)

    def create_role(self) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE),
                                                                           sql.Literal(self.role_password)))

    def database(self) -> Database:
        """A new empty database owned by ``ROLE``."""
        name = f"test_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)))
        return Database(self, self.dsn(name), self.role_password)

    def remove(self) -> None:
        try:
            if self.running:
                self._run(BIN / "pg_ctl", "stop", "-w", "-t", "60", "-m", "immediate", "-D", self.data)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def private_database(fsync: bool = True) -> Iterator[tuple[str, Path]]:
    """A fresh server with one database, removed afterwards: its DSN and a 0600 file holding its password."""
    server = PostgresServer(fsync=fsync)
    try:
        server.start()
        server.create_role()
        database = server.database()
        password_file = server.root / "password"
        password_file.touch(mode=0o600)
        password_file.write_text(database.password + "\n")
        yield database.dsn, password_file
    finally:
        server.remove()
