"""Who is calling. With no authentication configured, the listener is private to the daemon's own user,
so every caller is that user."""

from __future__ import annotations

import getpass

import grpc

_DAEMON_USER = getpass.getuser()


def caller(context: grpc.aio.ServicerContext) -> str:
    """The owner name of the caller behind ``context``."""
    return _DAEMON_USER
