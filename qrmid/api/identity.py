"""Who is calling. With no authentication configured, the listener is private to the daemon's own user,
so every caller is that user, and that user administers its own daemon."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller. ``name`` is the owner recorded on its tasks and leases."""

    name: str
    uid: int | None = None
    gid: int | None = None
    admin: bool = False


_DAEMON = Identity(getpass.getuser(), os.getuid(), os.getgid(), admin=True)


def caller(context: grpc.aio.ServicerContext) -> Identity:
    """The identity of the caller behind ``context``."""
    return _DAEMON
