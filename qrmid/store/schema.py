"""The PostgreSQL store's schema: versioned migrations (SQL files in ``migrations/``) applied by yoyo-migrations.

A daemon creates or upgrades the schema at start and refuses a schema that a newer qrmid has upgraded past what it
knows. Members starting together take turns through a session-level advisory lock, which PostgreSQL releases if the
member dies mid-way (yoyo's own lock table would stay locked)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import DatabaseURI
from yoyo.migrations import MigrationList, default_migration_table

MIGRATIONS = Path(__file__).with_name("migrations")
LOCK_KEY = 0x71726D6964  # "qrmid": the advisory lock held while migrating


class SchemaError(Exception):
    """The database's schema cannot be used by this qrmid; the message says why and what to do."""


class _Backend(PostgresqlPsycopgBackend):
    """yoyo's psycopg 3 backend on a libpq DSN (yoyo itself takes only URLs), locked by an advisory lock."""

    def __init__(self, conninfo: str, migration_table: str = default_migration_table) -> None:
        self.conninfo = conninfo
        super().__init__(DatabaseURI("postgresql+psycopg", None, None, None, None, "", {}), migration_table)

    def connect(self, dburi: DatabaseURI) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True)

    def copy(self) -> _Backend:
        return _Backend(self.conninfo, self.migration_table)

    @contextmanager
    def lock(self, timeout: int = 0) -> Iterator[None]:
        self.execute("SELECT pg_advisory_lock(:key)", {"key": LOCK_KEY})
        try:
            yield
        finally:
            self.execute("SELECT pg_advisory_unlock(:key)", {"key": LOCK_KEY})


def migrations(source: Path = MIGRATIONS) -> MigrationList:
    return read_migrations(str(source))


def migrate(conninfo: str, known: MigrationList | None = None) -> list[str]:
    """Bring the schema up to ``known`` (every migration shipped); the ids applied now. SchemaError when the
    database has migrations this qrmid does not know."""
    known = migrations() if known is None else known
    with _Backend(conninfo) as backend, backend.lock():
        applied = backend.get_applied_migration_hashes()
        unknown = set(applied) - {migration.hash for migration in known}
        if unknown:
            raise SchemaError(f"the database schema is newer than this qrmid knows ({len(unknown)} migration(s) "
                              f"applied by a newer version; this one knows {', '.join(m.id for m in known)}): "
                              "run the newer qrmid, or upgrade this one")
        pending = backend.to_apply(known)
        backend.apply_migrations(pending)
        return [migration.id for migration in pending]
