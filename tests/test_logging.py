"""Log lines: one event per line with task/lease/resource ids, as text or JSON, journal-style under systemd."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from daemons import ROOT, short_dir, wait_serving

from qrmid.client import Client, pulser_payload
from qrmid.ops import logging as logs

NOOP = '[[resources]]\ntype = "noop"\nname = "fast"\nslots = 2\n'
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} ")


@contextmanager
def daemon_logging_to(log: Path, daemon_section: str, env: dict[str, str] | None = None) -> Iterator[Client]:
    """A ``qrmid serve`` subprocess whose stderr goes to ``log``; yields a client; stops it at exit."""
    scratch = short_dir()
    socket = scratch / "qrmid.sock"
    cfg = scratch / "qrmid.toml"
    cfg.write_text(f'[daemon]\nsocket = "{socket}"\n{daemon_section}\n'
                   f'[journal]\npath = "{scratch / "journal.db"}"\n{NOOP}')
    with log.open("w") as stderr:
        journal = {"JOURNAL_STREAM": "{0.st_dev}:{0.st_ino}".format(os.fstat(stderr.fileno()))}
        environment = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
        process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(cfg)], cwd=ROOT,
                                   stderr=stderr, env={**environment, **(env if env is not None else {}),
                                                       **(journal if env is None else {})})
    try:
        try:
            wait_serving(f"unix:{socket}", process=process)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {log.read_text()}") from None
        with Client(f"unix:{socket}") as client:
            yield client
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def run_one(client: Client) -> str:
    task, _ = client.run("fast", pulser_payload({"version": "1"}, 3))
    return task.id


def test_json_lines_carry_the_task_and_resource_and_journal_priorities(tmp_path: Path) -> None:
    """Under the journal (its stream is stderr): no timestamps, an sd-daemon <N> prefix, then one JSON object."""
    log = tmp_path / "qrmid.log"
    with daemon_logging_to(log, 'log_format = "json"') as client:
        task_id = run_one(client)
    lines = log.read_text().splitlines()
    assert lines and all(re.match(r"^<[2-7]>\{", line) for line in lines), lines
    events = [json.loads(line[3:]) for line in lines]
    ended = [e for e in events if e.get("task_id") == task_id and e["message"] == "task completed"]
    assert len(ended) == 1
    assert ended[0]["resource"] == "fast" and ended[0]["level"] == "info" and "time" not in ended[0]
    assert lines[events.index(ended[0])].startswith("<6>")


def test_text_lines_carry_key_value_context_and_timestamps_off_the_journal(tmp_path: Path) -> None:
    log = tmp_path / "qrmid.log"
    with daemon_logging_to(log, 'log_format = "text"', env={"JOURNAL_STREAM": "1:2"}) as client:
        task_id = run_one(client)
    lines = log.read_text().splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    ended = [line for line in lines if f"task_id={task_id}" in line]
    assert len(ended) == 1 and "INFO qrmid.tasks: task completed" in ended[0] and " resource=fast" in ended[0]


def record(message: str, level: int = logging.WARNING, **extra: str) -> logging.LogRecord:
    entry = logging.LogRecord("qrmid.core.scheduler", level, __file__, 1, message, (), None)
    entry.__dict__.update(extra)
    return entry


def test_every_event_is_one_line_with_values_quoted_when_needed() -> None:
    try:
        raise RuntimeError("backend said:\n503")
    except RuntimeError:
        failed = record("task failed", lease_id="l 1", slurm_job_id="42")
        failed.exc_info = sys.exc_info()
    text = logs.EventFormatter("text").format(failed)
    assert "\n" not in text and text.endswith(' lease_id="l 1" slurm_job_id=42')
    assert "RuntimeError: backend said:\\n503" in text
    event = json.loads(logs.EventFormatter("json").format(failed))
    assert "\n503" in event["message"] and event["lease_id"] == "l 1" and event["slurm_job_id"] == "42"
    assert logs.EventFormatter("text", journal=True).format(record("x", logging.ERROR)) == \
        "<3>ERROR qrmid.core.scheduler: x"


def test_the_level_changes_at_run_time() -> None:
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(logging.INFO)
        assert logs.set_level("debug") == "info"
        assert root.level == logging.DEBUG and logging.getLogger("httpx").level == logging.WARNING
        assert logs.set_level("ERROR") == "debug" and root.level == logging.ERROR
        with pytest.raises(ValueError, match="use one of debug, info, warning, error"):
            logs.set_level("loud")
    finally:
        root.setLevel(before)
