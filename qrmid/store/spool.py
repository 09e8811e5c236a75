"""Queued payloads kept on disk until dispatch, so a long queue of large payloads does not sit in memory.

A payload above ``threshold`` bytes is written to its own file in a private directory beside the journal (mode
0700, owned by the daemon's user) and read back when its task is dispatched; the file goes when the task ends.
The journal, not the spool, is what a restarted daemon recovers from, so the directory is emptied at start and
files are not synced. Files are read and written on the spool's own small thread pool: never on the event loop,
and never queued behind other work in asyncio's default executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qrmid.backends.payloads import Payload, PayloadKind
from qrmid.core.tasks import PayloadUnreadable
from qrmid.store import codec

log = logging.getLogger(__name__)

THREADS = 2


class SpoolError(Exception):
    """The spool directory cannot be used; the message says why and what to do."""


class Spool:
    """Payload files in ``directory``; payloads of ``threshold`` bytes or less stay in memory."""

    def __init__(self, directory: Path, threshold: int) -> None:
        self.directory = directory
        self.threshold = threshold
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="qrmid spool")

    def open(self) -> None:
        """Create the directory (0700), refuse one another user owns or others may write, and empty it of files
        an earlier run left (blocking)."""
        try:
            self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # no journal made it (a cluster)
            self.directory.mkdir(mode=0o700, exist_ok=True)
            info = self.directory.lstat()
        except OSError as exc:
            raise SpoolError(f"cannot create the payload spool {self.directory}: {exc.strerror}; check the "
                             f"permissions of {self.directory.parent} ([journal] path)") from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise SpoolError(f"the payload spool {self.directory} must be a directory owned by uid {os.getuid()} "
                             f"with mode 0700 (it is owned by uid {info.st_uid}, mode "
                             f"{stat.S_IMODE(info.st_mode):04o}); remove it and start again")
        for leftover in self.directory.iterdir():
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        """Wait for pending file operations (blocking)."""
        self._pool.shutdown(wait=True)

    async def put(self, payload: Payload) -> SpooledPayload | None:
        """Write ``payload`` to a new file when it is above the threshold; None when it stays in memory (also
        when the file cannot be written: the byte limits on queues bound memory either way)."""
        if payload.size <= self.threshold:
            return None
        path = self.directory / uuid.uuid4().hex
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, _write, path, payload)
        except OSError as exc:
            log.warning("payload spool %s: cannot write a payload (%s); it stays in memory", self.directory, exc)
            return None
        return SpooledPayload(self, path, payload.kind)

    async def load(self, path: Path, kind: PayloadKind) -> Payload:
        """The payload in ``path``; PayloadUnreadable when it cannot be read back."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, _read, path, kind)
        except (OSError, ValueError, KeyError) as exc:
            raise PayloadUnreadable(f"its payload could not be read back from the spool file {path}: {exc}") from None

    def discard(self, path: Path) -> None:
        """Remove ``path``, on the spool's threads."""
        try:
            self._pool.submit(path.unlink, missing_ok=True)
        except RuntimeError:  # the pool was shut down: the next start empties the directory
            pass


class SpooledPayload:
    """One payload in the spool: a ``StoredPayload`` for the core."""

    def __init__(self, spool: Spool, path: Path, kind: PayloadKind) -> None:
        self.spool = spool
        self.path = path
        self.kind = kind

    async def load(self) -> Payload:
        return await self.spool.load(self.path, self.kind)

    def discard(self) -> None:
        self.spool.discard(self.path)


def _write(path: Path, payload: Payload) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(codec.dump(payload))
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _read(path: Path, kind: PayloadKind) -> Payload:
    return codec.load(kind.value, path.read_bytes())
