"""Real Unix users for the multi-user tests (run as root)."""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def system_users(names: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """System users without home directories; removed at the end when this call created them."""
    created = []
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                            name], check=True, capture_output=True)
            created.append(name)
    try:
        yield names
    finally:
        for name in created:
            subprocess.run(["userdel", name], check=False, capture_output=True)
