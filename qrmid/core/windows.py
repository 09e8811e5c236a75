"""Time windows of a resource: reservations (only their holders' tasks dispatch inside them), maintenance windows
(no task starts that would not end before one, none inside it) and the backend's own reservation (IBM's
``locked``: nothing is dispatched while the backend reports it).

Admins create and delete windows (journaled, mirrored to every cluster member); the config file plans maintenance
windows; a backend reports its own. Each resource's scheduler gets a ``WindowGate``: a task held by a window keeps
its place, shows why, and is expected no sooner than the window's end; the resource returns to everyone on its own
when the window closes, and closed windows are forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import logging
import os
import pwd
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

from cachetools import TTLCache

from qrmid.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from qrmid.core.events import Listener
from qrmid.core.gates import Hold
from qrmid.core.resource import Resource
from qrmid.core.scheduler import Scheduler
from qrmid.core.tasks import Task
from qrmid.core.times import clock

log = logging.getLogger(__name__)

RESERVATION, MAINTENANCE, BACKEND = "reservation", "maintenance", "backend"
ADMIN, CONFIG = "admin", "config"  # origins; a backend's window has origin BACKEND
PAST_SKEW = 60.0  # a start this far in the past is taken (the admin's clock, or "now" sent a moment ago)
IDLE_TICK = 5.0  # how often the backends' own reservations are looked at when no window opens or closes sooner
MAX_GROUP_USERS = 10_000  # users whose Unix groups are remembered at once
CONFIG_IDS = uuid.UUID("6f1d9a52-3c1e-4d3b-9a57-0c3b7d2f8e41")  # namespace of the config windows' stable ids


@dataclass(frozen=True, slots=True)
class Window:
    """A time window of one resource; times are epoch seconds, ``end`` None for a backend's reservation whose end
    it does not tell."""

    id: str
    resource: str
    kind: str  # RESERVATION, MAINTENANCE or BACKEND
    start: float
    end: float | None
    users: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    reason: str = ""
    origin: str = ADMIN  # ADMIN, CONFIG or BACKEND

    def open_at(self, now: float) -> bool:
        return self.start <= now and not self.closed_at(now)

    def closed_at(self, now: float) -> bool:
        return self.end is not None and self.end <= now

    def overlaps(self, other: Window) -> bool:
        return (other.end is None or self.start < other.end) and (self.end is None or other.start < self.end)

    @property
    def holders(self) -> str:
        """Who a reservation is for, e.g. "accounts physics, chemistry and users alice"."""
        parts = [f"{label} {', '.join(names)}" for label, names in
                 (("users", self.users), ("accounts", self.accounts), ("groups", self.groups)) if names]
        return " and ".join(parts)

    def describe(self, now: float) -> str:
        """One line for messages: kind, times and id."""
        until = f" to {clock(self.end, now)}" if self.end is not None else ""
        return f"{self.kind} window {self.id} ({clock(self.start, now)}{until})"


def planned(resource: str, start: float, end: float, reason: str) -> Window:
    """A maintenance window from the config file; its id is the same on every load and every member."""
    key = f"{resource}|{start!r}|{end!r}"
    return Window(str(uuid.uuid5(CONFIG_IDS, key)), resource, MAINTENANCE, start, end, reason=reason, origin=CONFIG)


class UserGroups:
    """The Unix groups of task owners, looked up in a worker thread (NSS may ask LDAP) and remembered for
    ``ttl`` seconds; ``on_known`` runs on the loop when a lookup ends."""

    def __init__(self, ttl: float, on_known: Callable[[], None]) -> None:
        self.ttl = ttl
        self.on_known = on_known
        self._known: TTLCache[str, frozenset[str]] = TTLCache(MAX_GROUP_USERS, ttl)
        self._looking: dict[str, asyncio.Task[None]] = {}

    def of(self, user: str) -> frozenset[str] | None:
        """``user``'s groups, or None while they are looked up (a lookup is started)."""
        groups = self._known.get(user)
        if groups is None and user not in self._looking:
            self._looking[user] = asyncio.get_running_loop().create_task(self._look_up(user))
        return groups

    async def _look_up(self, user: str) -> None:
        try:
            self._known[user] = await asyncio.to_thread(_groups_of, user)
        except Exception as exc:  # NSS failing: no group, looked up again once the entry expires
            log.warning("cannot read the Unix groups of %s: %s; its tasks are taken as in no group", user, exc)
            self._known[user] = frozenset()
        finally:
            del self._looking[user]
        self.on_known()


def _groups_of(user: str) -> frozenset[str]:
    """Blocking: the names of ``user``'s groups, primary one included; none for a name with no account."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return frozenset()
    names = set()
    for gid in os.getgrouplist(user, account.pw_gid):
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(gid).gr_name)
    return frozenset(names)


class Windows:
    """Every resource's windows: admins' (journaled through ``events``), the config file's and the backends'."""

    def __init__(self, resources: Callable[[], Mapping[str, Resource]], events: Listener, *,
                 nominal_run_seconds: float = 300.0, max_per_resource: int = 100,
                 group_cache_seconds: float = 300.0) -> None:
        self.resources = resources
        self.events = events
        self.nominal_run_seconds = nominal_run_seconds
        self.max_per_resource = max_per_resource
        self.groups = UserGroups(group_cache_seconds, self.wake)
        self.on_maintenance: Callable[[str, datetime | None], None] = lambda resource, until: None  # the Slurm gate
        # cluster mode: records a window unless another member's overlaps it (that one is returned)
        self.claim: Callable[[Window], Awaitable[Window | None]] | None = None
        self._admin: dict[str, Window] = {}
        self._config: list[Window] = []
        self._by_resource: dict[str, list[Window]] = {}
        self._backend_since: dict[str, float] = {}
        self._maintained: dict[str, float] = {}  # resource -> end of the maintenance told to on_maintenance
        self._changed = asyncio.Event()

    def tune(self, *, nominal_run_seconds: float, max_per_resource: int, group_cache_seconds: float) -> None:
        """The settings of ``[windows]`` (read again on reload)."""
        self.nominal_run_seconds = nominal_run_seconds
        self.max_per_resource = max_per_resource
        if group_cache_seconds != self.groups.ttl:
            self.groups = UserGroups(group_cache_seconds, self.wake)

    def attach(self, resource: Resource) -> None:
        """Give ``resource``'s scheduler its window gate."""
        if not any(isinstance(gate, WindowGate) for gate in resource.scheduler.gates):
            resource.scheduler.gates.append(WindowGate(self, resource.name, resource.scheduler))

    # -- what is planned ----------------------------------------------------------------------------------------

    def plan(self, windows: Iterable[Window]) -> None:
        """The config file's windows, replacing those of the last load."""
        self._config = list(windows)
        self._changes()

    def restore(self, windows: Iterable[Window]) -> None:
        """The admins' windows a store kept; those closed meanwhile are forgotten."""
        now = time.time()
        for window in windows:
            if window.closed_at(now):
                self.events.window_deleted(window)
            else:
                self._admin[window.id] = window
        self._changes()

    async def create(self, window: Window) -> Window:
        """Add an admin's window once it is checked; returns it (with its id) once recorded. InvalidArgument for a
        window that cannot be, ResourceExhausted past ``max_per_resource``; Unavailable when it cannot be recorded
        (it is in force until the daemon stops)."""
        now = time.time()
        window = self._checked(window, now)
        if self.claim is not None and (other := await self.claim(window)) is not None:
            self.mirror(other.id, other)  # another member's, not heard of here yet
            raise InvalidArgument(_overlap(other, window, now))
        self._admin[window.id] = window
        self.events.window_created(window)
        self._changes()
        log.info("%s of %s created%s", window.describe(now), window.resource,
                 f" for {window.holders}" if window.holders else "")
        await self.events.durable()
        return window

    async def delete(self, window_id: str) -> Window:
        """Delete an admin's window; returns it once recorded. NotFound naming the windows there are;
        FailedPrecondition for one from the config file or a backend."""
        window = self._admin.pop(window_id, None)
        if window is None:
            others = {w.id: w for w in self.listing()}
            if window_id in others:
                where = ("the config file: edit its [[windows.maintenance]] and reload" if others[window_id].origin ==
                         CONFIG else "the backend: it ends when the backend releases it")
                raise FailedPrecondition(f"window {window_id} comes from {where}")
            known = ", ".join(w.id for w in others.values() if w.origin == ADMIN) or "none"
            raise NotFound(f"no window with id {window_id!r} (admins' windows not yet closed: {known})")
        self.events.window_deleted(window)
        self._changes()
        log.info("%s of %s deleted", window.describe(time.time()), window.resource)
        await self.events.durable()
        return window

    def mirror(self, window_id: str, stored: Window | None) -> None:
        """Take an admin's window as the store holds it (None: deleted), from another member."""
        if stored is None:
            if self._admin.pop(window_id, None) is None:
                return
        elif self._admin.get(window_id) == stored:
            return
        else:
            self._admin[window_id] = stored
        self._changes()

    def admin_ids(self) -> set[str]:
        return set(self._admin)

    def _checked(self, window: Window, now: float) -> Window:
        """``window`` as an admin asked for it, with a new id; InvalidArgument saying what to fix otherwise."""
        served = self.resources()
        if window.resource not in served:
            raise InvalidArgument(f"resource {window.resource!r} is not served here (resources: "
                                  f"{', '.join(served) or 'none'}): name one of them")
        if window.kind not in (RESERVATION, MAINTENANCE):
            raise InvalidArgument(f"kind {window.kind!r} is not a window an admin creates: use {RESERVATION!r} or "
                                  f"{MAINTENANCE!r}")
        if window.end is None:
            raise InvalidArgument("end_time is required: a window must end (the resource returns to everyone then)")
        if window.end <= window.start:
            raise InvalidArgument(f"the window ends ({clock(window.end, now)}) before it starts "
                                  f"({clock(window.start, now)}): give an end after the start, or a duration")
        if window.end <= now:
            raise InvalidArgument(f"the window ended already ({clock(window.end, now)} is in the past): give times "
                                  "ahead")
        if window.start < now - PAST_SKEW:
            raise InvalidArgument(f"the window would start in the past ({clock(window.start, now)}): start it now "
                                  "or later")
        for label, names in (("users", window.users), ("accounts", window.accounts), ("groups", window.groups)):
            if bad := [name for name in names if not name or name != name.strip() or "," in name]:
                raise InvalidArgument(f"{label}: {bad[0]!r} is not a name: give names without spaces or commas")
        holders = window.users or window.accounts or window.groups
        if window.kind == RESERVATION and not holders:
            raise InvalidArgument("a reservation needs holders: give the users, accounts and/or groups whose tasks "
                                  "may run in it (e.g. --accounts physics)")
        if window.kind == MAINTENANCE and holders:
            raise InvalidArgument("a maintenance window has no holders (no task runs in it): leave out users, "
                                  "accounts and groups, or create a reservation")
        # planned windows only: a backend's own reservation has no known end, and qrmid's may follow it
        mine = [other for other in self._by_resource.get(window.resource, []) if not other.closed_at(now)]
        for other in mine:
            if other.overlaps(window):
                raise InvalidArgument(_overlap(other, window, now))
        if sum(other.origin == ADMIN for other in mine) >= self.max_per_resource:
            raise ResourceExhausted(f"resource {window.resource} has {self.max_per_resource} windows planned, the "
                                    "limit ([windows] max_per_resource): delete some first")
        return replace(window, id=str(uuid.uuid4()), origin=ADMIN)

    # -- what is in force ---------------------------------------------------------------------------------------

    def listing(self, resource: str = "", now: float | None = None) -> list[Window]:
        """The windows not yet closed, of every resource or ``resource``, soonest first (backends' included)."""
        now = time.time() if now is None else now
        names = [resource] if resource else list(self.resources())
        found = [window for name in names for window in self.of(name, now) if not window.closed_at(now)]
        return sorted(found, key=lambda window: (window.start, window.resource, window.id))

    def around(self, resource: str, now: float | None = None) -> tuple[Window | None, Window | None]:
        """``resource``'s window in force now, and the next one to open."""
        now = time.time() if now is None else now
        windows = [window for window in self.of(resource, now) if not window.closed_at(now)]
        active = next((window for window in windows if window.open_at(now)), None)
        ahead = next((window for window in windows if window.start > now), None)
        return active, ahead

    def expected_run(self, scheduler: Scheduler) -> float:
        """How long a task of ``scheduler``'s resource is expected to hold a slot."""
        return scheduler.run_seconds if scheduler.run_seconds is not None else self.nominal_run_seconds

    def of(self, resource: str, now: float | None = None) -> list[Window]:
        """``resource``'s windows by start, closed ones included until they are forgotten, with the backend's own
        reservation when it reports one (as of ``now``)."""
        windows = self._by_resource.get(resource, [])
        backend = self._backend(resource, time.time() if now is None else now)
        return windows if backend is None else [backend, *windows]

    def _backend(self, resource: str, now: float) -> Window | None:
        served = self.resources().get(resource)
        if served is None or not served.backend.reserved:
            self._backend_since.pop(resource, None)
            return None
        since = self._backend_since.setdefault(resource, now)
        return Window(BACKEND, resource, BACKEND, since, None, reason=served.backend.reason, origin=BACKEND)

    def _changes(self) -> None:
        """The windows changed: index them again, tell the Slurm gate, re-check dispatch, wake ``run``."""
        by_resource: dict[str, list[Window]] = {}
        for window in sorted([*self._admin.values(), *self._config], key=lambda window: window.start):
            by_resource.setdefault(window.resource, []).append(window)
        self._by_resource = by_resource
        self._tell_slurm(time.time())
        self.wake()
        self._changed.set()

    def wake(self) -> None:
        """Have every resource's scheduler check its queue again."""
        for resource in self.resources().values():
            resource.scheduler.wake()

    def _tell_slurm(self, now: float) -> None:
        """Tell the Slurm gate of each maintenance window that opened or closed."""
        ends = {}
        for name, windows in self._by_resource.items():
            end = next((w.end for w in windows if w.kind == MAINTENANCE and w.open_at(now) and w.end), None)
            if end is not None:
                ends[name] = end
        for name in ends.keys() | self._maintained.keys():
            if ends.get(name) != self._maintained.get(name):
                until = ends.get(name)
                self.on_maintenance(name, None if until is None else datetime.fromtimestamp(until, UTC))
        self._maintained = ends

    def _forget(self, now: float) -> None:
        """Forget the windows that closed (the admins' records are deleted)."""
        closed = [window for window in self._admin.values() if window.closed_at(now)]
        for window in closed:
            del self._admin[window.id]
            self.events.window_deleted(window)
            log.info("%s of %s closed", window.describe(now), window.resource)
        planned = [window for window in self._config if not window.closed_at(now)]
        if closed or len(planned) < len(self._config):
            self._config = planned
            self._changes()

    async def run(self) -> None:
        """Forget the windows that closed and tell the Slurm gate of those that open or close, at each window's
        opening and closing; note when a backend starts reporting its own reservation; forever. (The schedulers'
        gates re-check dispatch at those times on their own.)"""
        while True:
            now = time.time()
            self._forget(now)
            self._tell_slurm(now)
            for name in self.resources():
                self._backend(name, now)
            times = [at for windows in self._by_resource.values() for window in windows
                     for at in (window.start, window.end) if at is not None and at > now]
            wait = min([*times, now + IDLE_TICK]) - now
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await self._changed.wait()


class WindowGate:
    """Holds a resource's queued tasks as its windows say (see the module's docstring)."""

    def __init__(self, windows: Windows, resource: str, scheduler: Scheduler) -> None:
        self.windows = windows
        self.resource = resource
        self.scheduler = scheduler
        self._at = float("nan")  # the time ``_rules`` were worked out for
        self._rules: list[tuple[Window | None, Hold]] = []

    def hold(self, task: Task, now: float) -> Hold | None:
        if now != self._at:  # a dispatch asks about every queued task at one time: the rules are made once for it
            self._rules, self._at = self._rules_at(now), now
        for reservation, held in self._rules:
            if reservation is None:
                return held
            admitted = self._admits(reservation, task)
            if admitted is None:  # rare: its owner's groups are being read
                return Hold(f"{held.reason}; checking whether {task.owner} is in group "
                            f"{', '.join(reservation.groups)}")
            if not admitted:
                return held
        return None

    def _rules_at(self, now: float) -> list[tuple[Window | None, Hold]]:
        """What holds tasks at ``now``, in the windows' order: (None, hold) holds every task; (reservation, hold)
        those not its holders'."""
        run = self.windows.expected_run(self.scheduler)
        today = date.fromtimestamp(now)
        rules: list[tuple[Window | None, Hold]] = []
        for window in self.windows.of(self.resource, now):
            if window.closed_at(now):
                continue
            if window.start > now + run:
                break  # it and the later ones are too far ahead to hold anything
            if window.start > now:
                if window.kind == MAINTENANCE:
                    rules.append((None, _held(window, f"{run:.3g}", today)))
            else:
                rules.append((window if window.kind == RESERVATION else None, _held(window, "", today)))
            if rules and rules[-1][0] is None:
                break  # it holds every task
        return rules

    def changes_at(self, now: float) -> float | None:
        run = self.windows.expected_run(self.scheduler)
        times = [at for window in self.windows.of(self.resource, now) if not window.closed_at(now)
                 for at in (window.start, window.end, window.start - run if window.kind == MAINTENANCE else None)
                 if at is not None and at > now]
        return min(times) if times else None

    def _admits(self, window: Window, task: Task) -> bool | None:
        """Whether ``task`` is one of reservation ``window``'s holders' (None: its owner's groups are being read)."""
        if task.owner in window.users or (task.account or task.owner) in window.accounts:
            return True
        if not window.groups:
            return False
        groups = self.windows.groups.of(task.owner)
        return None if groups is None else not groups.isdisjoint(window.groups)


def _overlap(other: Window, window: Window, now: float) -> str:
    """Why ``window`` cannot be created: it overlaps ``other``; what to do instead."""
    fix = "delete it first (qrmid admin unreserve ID)" if other.origin == ADMIN else "change the config file"
    return f"the window overlaps {other.describe(now)} of resource {window.resource}: choose times outside it, or {fix}"


@functools.lru_cache(maxsize=1024)
def _held(window: Window, run: str, today: date) -> Hold:
    """Why ``window`` holds a task: in force (``run`` empty), or ahead while tasks run about ``run`` seconds; times as
    read on ``today``. Made once per window and day, not per task: a long queue is looked through at each dispatch."""
    now = datetime.combine(today, datetime.min.time()).timestamp()  # only its date matters to ``clock``
    because = f": {window.reason}" if window.reason else ""
    until = clock(window.end, now) if window.end is not None else ""
    if window.kind == BACKEND:
        return Hold(f"resource {window.resource} is reserved on the backend's side (it runs only its own "
                    "reservation's jobs); tasks wait until the backend releases it")
    if window.kind == RESERVATION:
        return Hold(f"resource {window.resource} is reserved for {window.holders} until {until} (reservation "
                    f"{window.id})", window.end)
    if run:
        return Hold(f"resource {window.resource} has maintenance from {clock(window.start, now)} to {until} (window "
                    f"{window.id}{because}); this task would not finish before it (tasks run about {run} s), so it "
                    "waits until the window ends", window.end)
    return Hold(f"resource {window.resource} is in maintenance until {until} (window {window.id}{because})", window.end)
