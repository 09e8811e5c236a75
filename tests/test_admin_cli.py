"""``qrmid admin`` against a real daemon subprocess: queues, resources, leases, drain/resume, accounting and the
journal's quarantine."""

from __future__ import annotations

import getpass
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from daemons import short_dir, subprocess_daemon

from qrmid import admin_cli
from qrmid.cli import main
from qrmid.client import Client, pulser_payload
from qrmid.v1 import quantum_resources_pb2 as pb

RESOURCES = """shutdown_grace_seconds = 1

[[resources]]
type = "noop"
name = "quick"
slots = 4

[[resources]]
type = "noop"
name = "busy"
slots = 1
delay_seconds = 600

[[resources]]
type = "noop"
name = "spare"
slots = 2
"""
SEQUENCE = {"version": "1"}
ME = getpass.getuser()


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as they want: no cell is cut short in the captured output."""
    monkeypatch.setattr(admin_cli.out, "width", 250)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with subprocess_daemon(RESOURCES) as (address, _):
        yield address


def admin(address: str, *args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(main, ["--address", address, "admin", *args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def as_json(address: str, *args: str) -> Any:
    return json.loads(admin(address, *args, "--json").output)


def test_queue_shows_every_unfinished_task_in_dispatch_order(address: str) -> None:
    with Client(address) as client:
        tasks = [client.start_task("busy", pulser_payload(SEQUENCE, 1)) for _ in range(3)]
        while client.task(tasks[0].id).state != pb.TASK_STATE_RUNNING:
            time.sleep(0.05)
    listed = as_json(address, "queue", "--resource", "busy")
    assert [t["id"] for t in listed] == [t.id for t in tasks]
    assert [(t["state"], t.get("queue_position", 0)) for t in listed] == \
        [("TASK_STATE_RUNNING", 0), ("TASK_STATE_QUEUED", 1), ("TASK_STATE_QUEUED", 2)]
    assert all(t["owner"] == ME for t in listed)
    assert as_json(address, "queue", "--owner", "nobody-else") == []
    table = admin(address, "queue", "--resource", "busy").output
    assert all(t.id in table for t in tasks) and "queued" in table and "running" in table

    cancelled = admin(address, "cancel", tasks[2].id, "--reason", "too long")
    assert f"task {tasks[2].id} of {ME}: cancelled" in cancelled.output
    assert [t["id"] for t in as_json(address, "queue", "--resource", "busy")] == [t.id for t in tasks[:2]]


def test_drain_and_resume_change_what_resources_show(address: str) -> None:
    admin(address, "drain", "spare", "--reason", "firmware update")
    drained = admin(address, "resources").output
    assert "spare" in drained and "draining" in drained and "firmware update" in drained
    admin(address, "resume", "spare")
    assert "draining" not in admin(address, "resources").output
    refused = admin(address, "drain", "nope", ok=False)
    assert "NOT_FOUND" in refused.output and "no resource named 'nope'" in refused.output


def test_leases_are_listed_without_tokens_and_can_be_revoked(address: str) -> None:
    with Client(address) as client:
        lease = client.acquire("quick", slurm_job_id="4242")
    listed = admin(address, "leases", "--json").output
    assert lease.token not in listed
    assert [(entry["id"], entry["owner"], entry["slurm_job_id"]) for entry in json.loads(listed)] == \
        [(lease.id, ME, "4242")]
    assert lease.id in admin(address, "leases").output
    assert f"revoked lease {lease.id}" in admin(address, "revoke", lease.id).output
    assert as_json(address, "leases") == []


def test_accounting_totals_what_ran(address: str) -> None:
    with Client(address) as client:
        done = [client.run("quick", pulser_payload(SEQUENCE, n))[0] for n in (2, 3, 4)]
    run_seconds = sum((t.end_time.ToNanoseconds() - t.start_time.ToNanoseconds()) / 1e9 for t in done)
    by_resource = as_json(address, "accounting", "--by", "resource", "--resource", "quick")
    assert list(by_resource) == ["quick"]
    assert {k: by_resource["quick"][k] for k in ("tasks", "completed", "shots")} == \
        {"tasks": 3, "completed": 3, "shots": 9}
    assert by_resource["quick"]["qpu_seconds"] == pytest.approx(run_seconds, abs=1e-3)
    by_user = as_json(address, "accounting", "--by", "user")
    assert list(by_user) == [ME] and by_user[ME]["tasks"] >= 3
    assert as_json(address, "accounting", "--since", "2999-01-01") == {}
    assert as_json(address, "accounting", "--until", "2000-01-01") == {}
    assert "quick" in admin(address, "accounting", "--by", "resource").output


def test_resources_report_utilization(address: str) -> None:
    used = {u["resource"]: u for u in as_json(address, "resources", "--window", "600")["resources"]}
    assert list(used) == ["quick", "busy", "spare"]
    assert used["busy"]["slots_total"] == 1 and used["busy"]["window_seconds"] == 600


def test_log_level_and_reload(address: str) -> None:
    assert "log level debug (was info)" in admin(address, "log-level", "debug").output
    assert "log level info (was debug)" in admin(address, "log-level", "INFO").output
    assert "added: -" in admin(address, "reload").output


def test_non_admins_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\nname = "alice"\ntoken = "alice-token-0123456789"\n')
    tokens.chmod(0o600)
    mine = tmp_path / "alice.token"
    mine.write_text("alice-token-0123456789\n")
    mine.chmod(0o600)
    with subprocess_daemon(f'auth = "token"\n{RESOURCES}\n[auth]\ntokens_file = "{tokens}"\n') as (address, _):
        options = ["--address", address, "--auth", "token", "--token-file", str(mine), "admin"]
        refused = CliRunner().invoke(main, [*options, "queue"])
        assert refused.exit_code == 1 and "PERMISSION_DENIED" in refused.output and "alice" in refused.output
        assert CliRunner().invoke(main, [*options, "accounting", "--json"]).output.strip() == "{}"


def test_quarantine_lists_unreadable_journal_rows_with_their_full_ids() -> None:
    journal = short_dir() / "journal.db"
    text = f'{RESOURCES}\n[journal]\npath = "{journal}"\n'
    with subprocess_daemon(text) as (address, _), Client(address) as client:
        assert as_json(address, "quarantine") == {"journal": str(journal)}, "nothing quarantined yet"
        broken, kept = (client.run("quick", pulser_payload(SEQUENCE, 1))[0] for _ in range(2))
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE tasks SET state = 'exploded' WHERE id = ?", (broken.id,))
    with subprocess_daemon(text) as (address, _), Client(address) as client:
        assert client.task(kept.id).state == pb.TASK_STATE_COMPLETED, "the daemon started with the rest"
        listed = as_json(address, "quarantine")
        assert listed["journal"] == str(journal)
        assert [(row["source"], row["key"], row["reason"]) for row in listed["rows"]] == \
            [("tasks", broken.id, "column state is 'exploded', not a task state")]
        table = admin(address, "quarantine").output
        assert broken.id in table and "column state is 'exploded'" in table
        assert f"1 quarantined row(s) in {journal}" in table
