"""Log set-up: one event per line on stderr; no timestamps under systemd, whose journal adds its own."""

from __future__ import annotations

import logging
import os


def setup(level: str) -> None:
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, force=True)
    for chatty in ("qiskit", "httpx", "httpcore", "botocore", "pulser"):  # per-request and per-pass lines
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
