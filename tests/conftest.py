"""Shared fixtures: one real qrmid subprocess with the local simulators, reused by the tests that need it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from daemons import subprocess_daemon
from postgres import database, postgres_server  # noqa: F401  (fixtures: a real PostgreSQL for cluster mode)

LOCAL_RESOURCES = """
[[resources]]
type = "local-qiskit"
name = "local-qiskit"
slots = 2
max_qubits = 26

[[resources]]
type = "local-pulser"
name = "local-pulser"
slots = 1
"""


@pytest.fixture(scope="session")
def local_daemon() -> Iterator[str]:
    """Address of a qrmid subprocess serving the local Qiskit and Pulser simulators."""
    with subprocess_daemon(LOCAL_RESOURCES) as (address, _):
        yield address
