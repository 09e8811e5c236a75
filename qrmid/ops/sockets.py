"""Whose Unix socket this is: what the daemon checks before it serves on a socket path, and what clients check
before they send a credential or a payload to one.

A socket path is safe for a trusted user when every directory on the way to it belongs to that user or root
and nobody else can write it (above the socket's own directory a sticky one such as /tmp is fine: there
others cannot rename or remove what is not theirs), and the socket itself belongs to that user or root. Then
only the trusted user or root can swap the socket between a check and the connect, so checking the path is
as good as checking the peer's credentials, which gRPC does not expose for its connections.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
from pathlib import Path

ROOT = 0
OWNER_ENV = "QRMID_SOCKET_OWNER"


class UnsafeSocket(Exception):
    """A socket path another user could have planted or could swap; the message names the path, its owner and
    mode, and the fix; ``foreign`` is the uid of the other user who owns the directory or socket, if one does."""

    def __init__(self, message: str, foreign: int | None = None) -> None:
        super().__init__(message)
        self.foreign = foreign


def login(uid: int) -> str:
    """The user name of ``uid``, or the uid itself when it has no passwd entry."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def user_name(uid: int) -> str:
    """``name (uid N)`` for messages."""
    return f"{login(uid)} (uid {uid})"


def parse_owner(value: str) -> int:
    """The uid of a user name or numeric uid; ValueError naming the value when there is no such user."""
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ValueError(f"socket owner {value!r} is neither a user name nor a uid") from None


def check_directories(directory: Path, owner: int, holds_socket: bool = True) -> None:
    """UnsafeSocket unless ``directory`` and each directory above it belong to ``owner`` or root and only they
    can write them (a sticky directory above the socket's own may be writable by all)."""
    directory = Path(os.path.abspath(directory))
    trusted = {ROOT, owner}
    for current in [*reversed(directory.parents), directory]:
        info = os.lstat(current)
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid not in trusted:
            raise UnsafeSocket(f"{current} belongs to {user_name(info.st_uid)} (mode {mode:04o}), not to "
                               f"{user_name(owner)} or root, so that user could swap the socket; remove it (as its "
                               "owner or root) or choose a socket in a directory of your own", info.st_uid)
        if stat.S_ISLNK(info.st_mode):  # a trusted link: what it points to must be safe too
            check_directories(Path(os.path.realpath(current)), owner, holds_socket and current == directory)
            continue
        sticky = info.st_mode & stat.S_ISVTX and not (holds_socket and current == directory)
        if mode & 0o022 and not sticky:
            raise UnsafeSocket(f"{current} (owner {user_name(info.st_uid)}, mode {mode:04o}) is writable by group "
                               f"or other users, who could swap the socket; run: chmod go-w {current}")


def check_socket(path: Path, owner: int) -> None:
    """UnsafeSocket unless the socket at ``path`` and its directories are safe for ``owner`` (see the module);
    OSError (FileNotFoundError: no daemon there) when they cannot be looked at."""
    check_directories(path.parent, owner)
    info = os.lstat(path)
    if info.st_uid not in (ROOT, owner):
        raise UnsafeSocket(f"socket {path} belongs to {user_name(info.st_uid)}, not to {user_name(owner)} or root: "
                           "it is not the daemon expected there", info.st_uid)
    if stat.S_ISLNK(info.st_mode):
        check_socket(Path(os.path.realpath(path)), owner)
    elif not stat.S_ISSOCK(info.st_mode):
        raise UnsafeSocket(f"{path} is not a Unix socket")


def make_directories(directory: Path, mode: int, owner: int) -> None:
    """Create ``directory`` and the missing ones above it with ``mode`` (0700 for a private daemon), each only in
    a directory that is safe for ``owner``: nothing is made where another user could swap it."""
    missing = [current for current in [directory, *directory.parents] if not current.exists()]
    for current in reversed(missing):
        check_directories(current.parent, owner, holds_socket=False)
        try:
            current.mkdir(mode=mode)
        except FileExistsError:
            pass  # made meanwhile: the next check judges whoever made it


class SocketLock:
    """An exclusive ``flock`` on ``<socket>.lock``: one daemon at a time probes, binds and serves a socket path,
    and it holds the lock for its whole life. The lock file stays: removing it would let a second daemon lock a
    new file while the first still holds the old one."""

    def __init__(self, socket: Path) -> None:
        self.path = socket.with_name(socket.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
