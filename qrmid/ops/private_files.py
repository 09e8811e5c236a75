"""Files that hold secrets (tokens, passwords): the daemon's user must own them and no one else may read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def exposed(path: Path, info: os.stat_result, what: str) -> str:
    """Why ``path`` (as ``info`` found it; ``what`` names it in the message) may not hold a secret, with the command
    that fixes it; empty when the daemon's user owns it and it is closed to everyone else."""
    if info.st_uid != os.getuid():
        return (f"{what} {path} is owned by uid {info.st_uid}, not by the daemon's uid {os.getuid()}; "
                f"run: chown {os.getuid()} {path}")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return f"{what} {path} has mode {mode:04o}, readable by group or other users; run: chmod 600 {path}"
    return ""
