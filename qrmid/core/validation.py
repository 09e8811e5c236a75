"""Payload validation in worker processes of its own: each check is bounded in memory and time, runs apart from
the simulators' workers and from the event loop's default executor, and users share the workers fairly.

Each user may have ``running_per_user`` checks running; more wait their turn, queued fairly rather than refused,
so that a client sending a burst of small tasks sees them all accepted. A free worker goes to the waiting user with
the fewest checks running, the longest waiting first among equals: with the default of one running check per user
and two workers, a user with a slow input always leaves a worker for everyone else. What waits is bounded per user
(``waiting_per_user`` checks, ``waiting_bytes_per_user`` bytes of payload held in memory meanwhile): past either, a
StartTask is refused with RESOURCE_EXHAUSTED at once.

An input that passed is remembered by the hash of its content (its sender, the check, the bounds and the input),
the last ``remembered`` of them: the same user sending the same input again (a hybrid loop's next call) is answered
at once, with no worker. So is one that differs from an input that passed only in what its check's outline
leaves out (``Check.outline``: a Qiskit input's parameter values, as long as they keep their shape and are finite
numbers): a hybrid loop sending one circuit with new parameter values each call. Keyed by sender too, so no user
can tell from the answer's speed what another one sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import itertools
import multiprocessing
import os
import pickle
import resource
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from pebble import ProcessExpired, ProcessPool

from qrmid.backends.base import InvalidPayload
from qrmid.backends.checks import Check, InputBounds
from qrmid.core.errors import ResourceExhausted, Unavailable

OUT_OF_MEMORY = 75  # exit status of a worker whose check ran out of memory (the worker is then replaced)
WATCH_SECONDS = 0.02  # how often a worker's memory is looked at
ADDRESS_SLACK = 1 << 30  # address space a worker may reserve beyond twice its memory limit
INLINE_HASH_BYTES = 64 << 10  # payloads hashed on the event loop; larger ones in a thread
_checking = threading.Event()  # set in a worker while it runs a check: its memory is watched only then
CHECK_MODULES = ("qrmid.backends.qiskit_jobs", "qrmid.backends.pulser_jobs", "qrmid.backends.ibm_quantum_system.isa")


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """How payload checks run (``[validation]``)."""

    workers: int = 2
    memory_mb: int = 1024  # resident memory a check may add to its warmed-up worker
    timeout_seconds: float = 30.0
    running_per_user: int = 1
    waiting_per_user: int = 1000
    waiting_bytes_per_user: int = 64 << 20
    remembered: int = 4096  # inputs that passed, kept by content hash (0: every input is checked)
    bounds: InputBounds = field(default_factory=InputBounds)


class Validation:
    """The validation workers and their fair share between users."""

    def __init__(self, limits: ValidationLimits | None = None) -> None:
        self.limits = limits or ValidationLimits()
        self._pool: ProcessPool | None = None
        self._free = self.limits.workers
        self._running = Counter[str]()
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._waiting_bytes = Counter[str]()
        self._arrivals = itertools.count()
        self._starting = threading.Lock()
        self._passed: LRUCache[bytes, int] | None = LRUCache(self.limits.remembered) if self.limits.remembered else None
        self.reused = 0  # checks answered from an identical input that passed before

    async def start(self) -> None:
        """Start the workers now, importing the payload checks' modules the daemon has loaded, so the first
        StartTask does not wait for them."""
        await asyncio.to_thread(self._started)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            await asyncio.to_thread(self._pool.join)
            self._pool = None

    async def run(self, owner: str, check: int | Check, size: int = 0) -> int:
        """The shots of a payload: ``check`` itself when the adapter settled it, else the result of running the
        check in a worker once it is ``owner``'s turn; ``size``: the payload's bytes. InvalidPayload when the
        payload is unusable or its check passes the memory or time limit; ResourceExhausted when ``owner`` has too
        many checks waiting."""
        if isinstance(check, int):
            return check
        key = outlined = None
        if self._passed is not None:
            key = _key(owner, check, self.limits.bounds) if size <= INLINE_HASH_BYTES else \
                await asyncio.to_thread(_key, owner, check, self.limits.bounds)
            if (shots := self._passed.get(key)) is not None:
                self.reused += 1
                return shots
            outlined = _outline_key(owner, check, self.limits.bounds) if size <= INLINE_HASH_BYTES else None
            if outlined is not None and (shots := self._passed.get(outlined)) is not None:
                self.reused += 1
                return shots
        await self._turn(owner, size)
        try:
            shots = await self._check(check)
        finally:
            self._release(owner)
        if key is not None and self._passed is not None:
            self._passed[key] = shots
            if outlined is not None:
                self._passed[outlined] = shots
        return shots

    async def _turn(self, owner: str, size: int) -> None:
        limits = self.limits
        waiting = self._waiting.setdefault(owner, deque())
        if len(waiting) >= limits.waiting_per_user:
            raise ResourceExhausted(
                f"you have {len(waiting)} payloads waiting to be validated, the per-user limit ([validation] "
                "waiting_per_user); wait for answers to your earlier StartTask calls")
        if waiting and self._waiting_bytes[owner] + size > limits.waiting_bytes_per_user:
            raise ResourceExhausted(
                f"you have {self._waiting_bytes[owner]} bytes of payloads waiting to be validated; with this one's "
                f"{size} they would pass the per-user limit of {limits.waiting_bytes_per_user} ([validation] "
                "waiting_bytes_per_user); wait for answers to your earlier StartTask calls")
        turn = asyncio.get_running_loop().create_future()
        entry = (next(self._arrivals), turn)
        waiting.append(entry)
        self._waiting_bytes[owner] += size
        self._dispatch()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted as the caller left: hand the worker on
                self._release(owner)
            elif entry in self._waiting.get(owner, ()):
                self._waiting[owner].remove(entry)
                if not self._waiting[owner]:
                    del self._waiting[owner]
            raise
        finally:
            self._waiting_bytes[owner] -= size
            if not self._waiting_bytes[owner]:
                del self._waiting_bytes[owner]

    def _dispatch(self) -> None:
        """Give free workers to waiting users: fewest running first, then longest waiting."""
        cap = self.limits.running_per_user
        while self._free > 0:
            ready = [owner for owner, waiting in self._waiting.items() if self._running[owner] < cap]
            if not ready:
                return
            owner = min(ready, key=lambda name: (self._running[name], self._waiting[name][0][0]))
            waiting = self._waiting[owner]
            _, turn = waiting.popleft()
            if not waiting:
                del self._waiting[owner]
            if turn.done():  # its caller left while it waited
                continue
            self._free -= 1
            self._running[owner] += 1
            turn.set_result(None)

    def _release(self, owner: str) -> None:
        self._running[owner] -= 1
        if not self._running[owner]:
            del self._running[owner]
        self._free += 1
        self._dispatch()

    async def _check(self, check: Check) -> int:
        limits = self.limits
        pool = self._pool if self._pool is not None else await asyncio.to_thread(self._started)
        future = pool.schedule(_checked, args=(check.function, limits.bounds, check.args),
                               timeout=limits.timeout_seconds)
        try:
            shots: int = await asyncio.wrap_future(future)  # cancelling the call stops (and replaces) the worker
        except FutureTimeout:
            raise InvalidPayload(f"checking the payload took longer than {limits.timeout_seconds:g} s, the limit "
                                 "([validation] timeout_seconds); send a smaller input or split it") from None
        except ProcessExpired as exc:
            if exc.exitcode == OUT_OF_MEMORY:
                raise InvalidPayload(f"checking the payload needed more than {limits.memory_mb} MiB of memory, the "
                                     "limit ([validation] memory_mb); send a smaller input or split it") from None
            raise InvalidPayload(f"the payload crashed the process checking it (exit status {exc.exitcode}); it "
                                 "cannot be used as it is") from None
        except BrokenProcessPool:  # workers die as they start (e.g. memory_mb below what they need)
            self._pool = None
            pool.stop()
            raise Unavailable("the daemon's payload validation workers cannot start; retry later, and tell the "
                              "admins (the daemon's log says why)") from None
        return shots

    def _started(self) -> ProcessPool:
        with self._starting:  # two first checks at once start one pool
            if self._pool is None:
                warm = tuple(module for module in CHECK_MODULES if module in sys.modules)
                self._pool = ProcessPool(max_workers=self.limits.workers, initializer=_prepare,
                                         initargs=(self.limits.memory_mb << 20, warm),
                                         context=multiprocessing.get_context("spawn"))
                self._pool.schedule(int)  # the pool starts its workers with its first task
            return self._pool


def _key(owner: str, check: Check, bounds: InputBounds) -> bytes:
    """The content hash of ``owner``'s check: its function, the bounds, the input and the limits it is checked
    against."""
    data = pickle.dumps((owner, check.function, bounds, check.args), protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(data).digest()


def _outline_key(owner: str, check: Check, bounds: InputBounds) -> bytes | None:
    """The hash of ``owner``'s check by its outline (see ``Check.outline``); None when it has none."""
    outline = check.outline(*check.args) if check.outline is not None else None
    if outline is None:
        return None
    data = pickle.dumps((owner, check.function, bounds, outline), protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(b"outline" + data).digest()


def _prepare(memory: int, modules: tuple[str, ...]) -> None:
    """Set up a validation worker: one BLAS thread and the check modules imported; then a watchdog ends the worker
    once its resident memory grows ``memory`` bytes past its size now, and its address space is capped well above
    that (allocators reserve more than they touch), for allocations too large or too fast for the watchdog. (A
    limit that only makes Python raise MemoryError is not enough: some parsers catch every exception and retry.)"""
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for module in modules:
        importlib.import_module(module)
    size, resident = _memory()
    threading.Thread(target=_watch, args=(resident + memory,), name="memory watchdog", daemon=True).start()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + 2 * memory + ADDRESS_SLACK
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))


def _memory() -> tuple[int, int]:
    """This process's address space and resident memory, in bytes."""
    with open("/proc/self/statm", "rb") as statm:
        size, resident = statm.read().split()[:2]
    page = os.sysconf("SC_PAGE_SIZE")
    return int(size) * page, int(resident) * page


def _watch(limit: int) -> None:
    """End the worker once its resident memory passes ``limit`` while a check runs (an idle worker costs nothing)."""
    while _checking.wait() and _memory()[1] <= limit:
        time.sleep(WATCH_SECONDS)
    os._exit(OUT_OF_MEMORY)


def _checked(function: Any, bounds: InputBounds, args: tuple[Any, ...]) -> int:
    """Run one check in a worker; every failure becomes an InvalidPayload, running out of memory ends the worker."""
    _checking.set()
    try:
        shots: int = function(bounds, *args)
    except InvalidPayload:
        raise
    except MemoryError:
        os._exit(OUT_OF_MEMORY)  # a fresh worker replaces this one, whose heap may be left fragmented
    except RecursionError:
        raise InvalidPayload("the payload nests too deeply to be read") from None
    except Exception as exc:  # a check is meant to raise InvalidPayload only: say what went wrong, never crash
        raise InvalidPayload(f"the payload cannot be read: {type(exc).__name__}: {str(exc)[:300]}") from None
    finally:
        _checking.clear()
    return shots
