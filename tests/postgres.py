"""A real PostgreSQL server for tests (``qrmid.bench.pg_server``): one server per test session, with fsync off,
a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qrmid.bench.pg_server import ROLE, Database, PostgresServer

__all__ = ["ROLE", "Database", "PostgresServer", "database", "postgres_server"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, stopped and removed at the end."""
    server = PostgresServer()
    try:
        server.start()
        server.create_role()
        yield server
    finally:
        server.remove()


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[Database]:
    """A fresh database for one test; the server is running again afterwards even if the test stopped it."""
    yield postgres_server.database()
    if not postgres_server.running:
        postgres_server.start()
