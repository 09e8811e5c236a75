"""Who is calling. Each listener authenticates its callers (``qrmid.api.auth``) before any handler runs
and binds the result to the RPC, where ``caller(context)`` finds it."""

from __future__ import annotations

import getpass
import os
import pwd
from contextvars import ContextVar
from dataclasses import dataclass

import grpc

from qrmid.core.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller. ``name`` is the owner recorded on its tasks and leases."""

    name: str
    uid: int | None = None
    gid: int | None = None
    admin: bool = False


def daemon_user() -> Identity:
    """The daemon's own user, who administers its daemon: every caller on an ``auth = "none"`` listener."""
    return Identity(getpass.getuser(), os.getuid(), os.getgid(), admin=True)


_CURRENT: ContextVar[Identity] = ContextVar("qrmid_caller")


def bind(identity: Identity) -> None:
    """Make ``identity`` the caller of the RPC running in the current task."""
    _CURRENT.set(identity)


def caller(context: grpc.aio.ServicerContext) -> Identity:
    """The identity of the caller behind ``context``, as its listener authenticated it."""
    try:
        return _CURRENT.get()
    except LookupError:
        raise RuntimeError("RPC reached a handler without passing through authentication") from None


def user_name(user: str) -> str:
    """The name of Unix user ``user``, given as a name or a numeric uid (blocking: asks the name service);
    InvalidArgument when there is no such user."""
    try:
        return pwd.getpwuid(int(user)).pw_name if user.isdigit() else pwd.getpwnam(user).pw_name
    except KeyError:
        raise InvalidArgument(f"no user {user!r} on the daemon's host") from None
