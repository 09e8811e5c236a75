"""Commit tracking shared by the stores: which writes are committed, who waits for them, and which tasks can never
be recorded.

A store counts every write it enqueues; its writer reports each commit (``_settle``) or failure (``_broken`` and
``_failed``). ``durable()`` waits for the commit of everything enqueued so far, ``recorded(task)`` for that task's
record, ``states_recorded(task)`` for its writes so far, each for at most ``commit_timeout`` seconds; they raise
Unavailable while the store cannot be written. One timer, set for the earliest waiter's bound, serves every waiter.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from qrmid.core.errors import Unavailable
from qrmid.core.tasks import Task

log = logging.getLogger(__name__)

MAX_BATCH = 5_000  # writes per transaction (a group enqueued together is not split: a batch may end past it)
MAX_RETRY_SECONDS = 5.0  # the longest pause between two attempts to commit

Write = tuple[str, tuple[Any, ...], str]  # SQL, its parameters, the id of the task it records ('' for none)
Waiter = tuple[int, str, asyncio.Future[None], float]  # writes to commit, the task id ('' for none), its future, and
# when it gives up (the loop's clock)


class Commits:
    """The commit bookkeeping of a store; ``name`` is how its messages call it (never with a password)."""

    def __init__(self, name: str, commit_timeout: float) -> None:
        self.name = name
        self.commit_timeout = commit_timeout
        self.error = ""  # why the last commit failed; empty while the store is written
        self._loop: asyncio.AbstractEventLoop | None = None
        self._enqueued = 0
        self._committed = 0
        self._waiters: list[Waiter] = []  # in the order they came, so by when they give up
        self._bound: asyncio.TimerHandle | None = None  # fails the waiters past ``commit_timeout``
        self._refused: dict[str, str] = {}  # task id -> why a write of it can never be recorded
        self._inserted: dict[str, int] = {}  # task id -> how many writes must commit for its record to be durable
        self._latest: dict[str, int] = {}  # task id -> how many writes must commit for its latest state to be

    def _stalled(self) -> str:
        """The answer when nothing is committed within ``commit_timeout`` seconds: what to check."""
        raise NotImplementedError

    # -- on the event loop -------------------------------------------------------------------------------------

    def writable(self) -> None:
        """Raise Unavailable while the store cannot be written."""
        if self.error:
            raise Unavailable(self.error)

    async def durable(self) -> None:
        """Return once everything enqueued so far is committed; Unavailable when the store cannot be written or it
        is not committed within ``commit_timeout`` seconds."""
        self.writable()
        if self._committed < self._enqueued:
            await self._wait(self._enqueued, "")

    async def recorded(self, task: Task) -> None:
        """Return once ``task``'s record (``task_queued``) is committed; Unavailable when it cannot be written now
        or never can be (its values), or is not committed within ``commit_timeout`` seconds."""
        if task.id in self._refused:
            raise Unavailable(self._refused[task.id])
        target = self._inserted.get(task.id, 0)
        if target > self._committed:
            self.writable()
            await self._wait(target, task.id)

    async def states_recorded(self, task: Task) -> None:
        """Return once the writes of ``task``'s states so far are committed (a write refused for its values counts
        as done, as for ``durable``), not waiting for later writes; Unavailable as ``durable``."""
        target = self._latest.get(task.id, 0)
        if target > self._committed:
            self.writable()
            await self._wait(target, "")

    async def _wait(self, target: int, task_id: str) -> None:
        """Wait for the commit of the first ``target`` writes (and for the fate of ``task_id``'s)."""
        assert self._loop is not None
        waiter = self._loop.create_future()  # this call's own: cancelled with it (then dropped at the next commit)
        due = self._loop.time() + self.commit_timeout
        self._waiters.append((target, task_id, waiter, due))
        if self._bound is None:
            self._bound = self._loop.call_at(due, self._expire)
        await waiter

    def _expire(self) -> None:
        """Fail the waiters whose ``commit_timeout`` has passed; set the timer for the next one."""
        assert self._loop is not None
        self._bound = None
        now = self._loop.time()
        waiting = []
        for entry in self._waiters:
            waiter = entry[2]
            if waiter.done():
                continue
            if entry[3] <= now:
                waiter.set_exception(Unavailable(self._stalled()))
            else:
                waiting.append(entry)
        self._waiters = waiting
        if waiting:
            self._bound = self._loop.call_at(min(entry[3] for entry in waiting), self._expire)

    def _changed(self, task_id: str) -> None:
        """Note that the writes enqueued so far record ``task_id``'s latest state (call after enqueuing them)."""
        self._latest[task_id] = self._enqueued

    def _queued(self, task_id: str) -> None:
        """Note that the writes enqueued so far record ``task_id`` (call after enqueuing them)."""
        self._inserted[task_id] = self._enqueued

    def _forget(self, task_id: str) -> None:
        """Drop what is known of ``task_id``'s record (the core gave the task up)."""
        self._refused.pop(task_id, None)
        self._inserted.pop(task_id, None)

    def _settle(self, committed: int, refused: dict[str, str]) -> None:
        """The first ``committed`` writes are committed, but for those ``refused`` (why, by task id): answer their
        waiters."""
        self._committed = committed
        self._refused.update(refused)
        self._inserted = {task_id: target for task_id, target in self._inserted.items() if target > committed}
        self._latest = {task_id: target for task_id, target in self._latest.items() if target > committed}
        waiting = []
        for entry in self._waiters:
            target, task_id, waiter, _ = entry
            if waiter.done():
                continue
            if task_id in self._refused:
                waiter.set_exception(Unavailable(self._refused[task_id]))
            elif target <= committed:
                waiter.set_result(None)
            else:
                waiting.append(entry)
        self._waiters = waiting

    def _failed(self, message: str) -> None:
        """A commit failed: every waiter gets Unavailable with ``message``."""
        for _, _, waiter, _ in self._waiters:
            if not waiter.done():
                waiter.set_exception(Unavailable(message))
        self._waiters = []

    # -- in the writer (a task on the loop, or a thread of its own) ------------------------------------------

    def _broken(self, message: str) -> None:
        """Report that the store cannot be written, logging ``message`` once while it lasts."""
        if message != self.error:
            log.error("%s", message)
        self.error = message

    def _mended(self) -> None:
        """Report that the store is written again."""
        if self.error:
            log.warning("%s is written again", self.name)
            self.error = ""

    def _refusal(self, refused: dict[str, str], task_id: str, error: str) -> None:
        """Note in ``refused`` that a write of ``task_id`` can never be recorded, for ``error`` (its values)."""
        reason = (f"{self.name} cannot record task {task_id or '-'} ({error}): it is not taken; check its "
                  "parameters, or report this as a bug")
        if task_id not in refused:
            log.error("%s", reason)
        refused[task_id] = reason
