"""Every user and admin listing on an 80-column terminal (a real pseudo-terminal), on a narrower one, piped, and as
JSON, against a real daemon process: names and ids are never cut, the table fits the terminal when they allow it,
and piped output is plain text that grep and awk can use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemons import ROOT, subprocess_daemon
from terminal import ESCAPES, in_terminal

from qrmid.client import Client, pulser_payload
from qrmid.v1 import quantum_resources_pb2 as pb

LONG = "local-qiskit-simulator"  # a long resource name: with a task id it leaves little room on 80 columns
REASON = "firmware update of the control electronics, back after the calibration run of the afternoon"
RESOURCES = f"""shutdown_grace_seconds = 1

[[resources]]
type = "noop"
name = "{LONG}"
slots = 1
delay_seconds = 600

[[resources]]
type = "noop"
name = "quick"
slots = 4

[[resources]]
type = "noop"
name = "spare"
slots = 2
"""
SEQUENCE = {"version": "1"}


def names(doc: list[dict[str, Any]]) -> list[str]:
    return [entry["name"] for entry in doc]


def ids_and_resources(doc: list[dict[str, Any]]) -> list[str]:
    return [entry["id"] for entry in doc] + [entry["resource"] for entry in doc]


# Each listing, and what it must always show whole, from its JSON.
LISTINGS: dict[tuple[str, ...], Callable[[Any], list[str]]] = {
    ("resources",): names,
    ("leases",): lambda doc: ids_and_resources(doc) + [entry["slurm_job_id"] for entry in doc],
    ("tasks",): ids_and_resources,
    ("admin", "queue"): lambda doc: ids_and_resources(doc) + [entry["owner"] for entry in doc],
    ("admin", "leases"): ids_and_resources,
    ("admin", "resources"): lambda doc: [entry["resource"] for entry in doc["resources"]],
    ("admin", "accounting", "--by", "resource"): list,
}


def piped(*args: str, address: str) -> str:
    run = subprocess.run([sys.executable, "-m", "qrmid", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "QRMID_ADDRESS": address, "COLUMNS": "80"})
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A daemon with a running task, a queued one, finished ones, two leases and a drained resource."""
    with subprocess_daemon(RESOURCES) as (address, _), Client(address) as client:
        for _ in range(2):
            client.run("quick", pulser_payload(SEQUENCE, 3))
        running = client.start_task(LONG, pulser_payload(SEQUENCE, 1))
        queued = client.start_task(LONG, pulser_payload(SEQUENCE, 1))
        leases = [client.acquire(LONG, slurm_job_id=str(job)) for job in (1234567890123, 1234567890124)]
        subprocess.run([sys.executable, "-m", "qrmid", "--address", address, "admin", "drain", "spare", "--reason",
                        REASON], check=True, capture_output=True, timeout=120)
        yield address
        for task in (queued, running):
            client.stop_task(task.id)
        for lease in leases:
            client.release(lease.token)


@pytest.mark.parametrize("listing", LISTINGS, ids=" ".join)
def test_listings_on_an_80_column_terminal_fit_and_never_cut_a_name(address: str, listing: tuple[str, ...]) -> None:
    must_show = LISTINGS[listing](json.loads(piped(*listing, "--json", address=address)))
    assert must_show, "the daemon has something to list"
    assert LISTINGS[listing](json.loads(piped(*listing, "-o", "json", address=address))) == must_show
    status, shown, stderr = in_terminal(*listing, address=address, columns=80)
    assert status == 0, stderr
    words = set(shown.split())
    assert all(name in words for name in must_show), (must_show, shown)
    assert "…" not in shown
    assert max(len(line) for line in shown.splitlines()) <= 80, shown


@pytest.mark.parametrize("listing", LISTINGS, ids=" ".join)
def test_listings_on_a_narrow_terminal_let_it_fold_lines_rather_than_cut(address: str,
                                                                          listing: tuple[str, ...]) -> None:
    must_show = LISTINGS[listing](json.loads(piped(*listing, "--json", address=address)))
    status, shown, stderr = in_terminal(*listing, address=address, columns=30)
    assert status == 0, stderr
    assert all(name in shown.split() for name in must_show) and "…" not in shown, shown


@pytest.mark.parametrize("listing", LISTINGS, ids=" ".join)
def test_piped_listings_are_plain_aligned_text(address: str, listing: tuple[str, ...]) -> None:
    must_show = LISTINGS[listing](json.loads(piped(*listing, "--json", address=address)))
    text = piped(*listing, address=address)
    assert not ESCAPES.search(text) and "…" not in text
    header, *rows = text.splitlines()
    assert header.split()[0].isupper()
    assert all(name in text.split() for name in must_show)
    start = header.index("  " + header.split()[1]) + 2  # the second column: each row's cell starts or ends there
    end = start + len(header.split()[1])
    for row in rows:
        left = row[start - 1] == " " and row[start] != " "
        right = row[end - 1] != " " and row[end:end + 1] in ("", " ")
        assert left or right, f"not aligned under {header.split()[1]}:\n{header}\n{row}"
        assert not row.startswith(" "), "the first column is never empty: '-' stands for nothing"


def test_tasks_fit_80_columns_by_leaving_out_columns_and_wide_shows_them(address: str) -> None:
    _, table, _ = in_terminal("tasks", address=address, columns=80)
    _, wide, _ = in_terminal("tasks", "-o", "wide", address=address, columns=80)
    head, wide_head = table.splitlines()[0].split(), wide.splitlines()[0].split()
    assert head[:4] == ["TASK", "RESOURCE", "STATE", "POS"] and "REASON" not in head and "SHOTS" not in head
    assert {"SUBMITTED", "TIME", "OWNER", "PRIORITY", "REASON", "SHOTS", "STARTED", "ENDED"} <= set(wide_head)
    plain = piped("tasks", address=address).splitlines()[0].split()
    assert {"SUBMITTED", "TIME", "OWNER", "REASON"} <= set(plain) and "SHOTS" not in plain
    rows = {line.split()[0]: line.split() for line in piped("tasks", address=address).splitlines()[1:]}
    running = [row for row in rows.values() if row[2] == "running"]
    queued = [row for row in rows.values() if row[2] == "queued"]
    assert [row[1:4] for row in running] == [[LONG, "running", "-"]]
    assert [row[1:4] for row in queued] == [[LONG, "queued", "1"]]


def test_long_text_wraps_within_the_terminal(address: str) -> None:
    _, shown, _ = in_terminal("resources", address=address, columns=80)
    assert max(len(line) for line in shown.splitlines()) <= 80
    assert " ".join(shown.split()).count("firmware") == 1
    assert all(word in shown.split() for word in REASON.split()), shown
    line = next(line for line in piped("resources", address=address).splitlines() if line.startswith("spare "))
    assert line.endswith(REASON), "piped: one line per row, the reason whole"


def test_status_as_lines_and_json(address: str) -> None:
    with Client(address) as client:
        task = client.list_tasks(states=[pb.TASK_STATE_QUEUED])[0]
    doc = json.loads(piped("status", task.id, "--json", address=address))
    assert doc["id"] == task.id and doc["state"] == "TASK_STATE_QUEUED" and doc["queue_position"] == 1
    lines = dict(line.split(None, 1) for line in piped("status", task.id, address=address).splitlines()
                 if not line.startswith(("queue position", "expected start", "slurm job")))
    assert lines["id"] == task.id and lines["resource"] == LONG and lines["state"] == "queued"
    _, shown, _ = in_terminal("status", task.id, address=address, columns=80)
    assert task.id in shown.split()
