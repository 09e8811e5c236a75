"""Log set-up: one event per line on stderr, as text with ``key=value`` context or as one JSON object.

Context (task id, lease id, resource, Slurm job id) comes from a record's ``extra`` keys, e.g.
``log.info("task failed", extra={"task_id": task.id, "resource": name})``. Under systemd (stderr is the
journal stream) lines carry no timestamp, since the journal adds its own, and start with the sd-daemon
``<N>`` priority prefix so the journal records each line at its level.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Literal

from qrmid.core.events import Listener
from qrmid.core.scheduler import log_context
from qrmid.core.tasks import Task

CONTEXT = ("task_id", "lease_id", "resource", "slurm_job_id")
LEVELS = ("debug", "info", "warning", "error")
CHATTY = ("qiskit", "httpx", "httpcore", "botocore", "pulser", "psycopg", "yoyo")  # per-request and per-pass lines
# sd-daemon(3) priorities: <7> debug, <6> info, <4> warning, <3> error, <2> critical.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def under_journal() -> bool:
    """True when stderr is connected to the systemd journal (``$JOURNAL_STREAM`` names stderr's device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        stat = os.fstat(sys.stderr.fileno())
        return (int(device), int(inode)) == (stat.st_dev, stat.st_ino)
    except (ValueError, OSError):
        return False


class EventFormatter(logging.Formatter):
    """One line per record: text with ``key=value`` context, or JSON; journal-style when ``journal``."""

    def __init__(self, style: Literal["text", "json"] = "text", journal: bool = False) -> None:
        super().__init__()
        self.style = style
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        context = {key: str(value) for key in CONTEXT if (value := getattr(record, key, None))}
        if self.style == "json":
            event: dict[str, str] = {} if self.journal else {"time": self._time(record)}
            event |= {"level": record.levelname.lower(), "logger": record.name, "message": message, **context}
            line = json.dumps(event, ensure_ascii=False)
        else:
            pairs = "".join(f" {key}={_quoted(value)}" for key, value in context.items())
            stamp = "" if self.journal else f"{self._time(record)} "
            line = f"{stamp}{record.levelname} {record.name}: {message}{pairs}".replace("\n", "\\n")
        return f"<{_PRIORITY.get(record.levelno, 6)}>{line}" if self.journal else line

    def _time(self, record: logging.LogRecord) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"


class TaskLog(Listener):
    """Logs each task's life with its ids: acceptance and start at debug level, its end at info."""

    def __init__(self) -> None:
        self.log = logging.getLogger("qrmid.tasks")

    def task_queued(self, task: Task) -> None:
        self.log.debug("task queued for %s by %s", task.resource, task.owner, extra=log_context(task))

    def task_changed(self, task: Task) -> None:
        view = task.view
        level = logging.INFO if view.state.terminal else logging.DEBUG
        reason = f": {view.reason}" if view.reason else ""
        self.log.log(level, "task %s%s", view.state.value, reason, extra=log_context(task))


def setup(level: str, style: Literal["text", "json"] = "text") -> None:
    """Send every log record to stderr, one event per line, at ``level`` (debug, info, warning, error)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EventFormatter(style, journal=under_journal()))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    _quiet_chatty()


def set_level(level: str) -> str:
    """Change the daemon's log level at run time; returns the previous one. ValueError for an unknown level."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    root = logging.getLogger()
    previous = logging.getLevelName(root.level).lower()
    root.setLevel(level.upper())
    _quiet_chatty()
    return previous


def _quiet_chatty() -> None:
    for chatty in CHATTY:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def _quoted(value: str) -> str:
    return json.dumps(value) if not value or any(c in value for c in ' "=\\') else value
