"""Where the daemon listens and keeps its state by default, shared by the daemon and its clients."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SYSTEM_SOCKET = Path("/run/qrmid/qrmid.sock")
SYSTEM_STATE = Path("/var/lib/qrmid")


def default_socket() -> Path:
    """``/run/qrmid/qrmid.sock`` for root; otherwise a private path under ``$XDG_RUNTIME_DIR`` (or /tmp)."""
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(tempfile.gettempdir()) / f"qrmid-{os.getuid()}"
    return base / "qrmid" / "qrmid.sock"


def default_journal() -> Path:
    """``/var/lib/qrmid/journal.db`` for root; otherwise under ``$XDG_STATE_HOME`` (or ~/.local/state)."""
    if os.geteuid() == 0:
        return SYSTEM_STATE / "journal.db"
    state = os.environ.get("XDG_STATE_HOME")
    return (Path(state) if state else Path.home() / ".local" / "state") / "qrmid" / "journal.db"


def default_address() -> str:
    """gRPC target of the default socket."""
    return f"unix:{default_socket()}"
