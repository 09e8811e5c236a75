"""A cluster member's link to the shared PostgreSQL store: the election of one dispatcher per resource, and the
notifications that keep every member's copy of the tasks, leases and drains current.

Election: on a connection of its own, the member holds a session-level advisory lock per resource it dispatches
(``pg_try_advisory_lock``; PostgreSQL frees it when that session ends: the member died, was cut off, or its host went
away, which TCP keepalives detect). Taking a lock bumps the resource's epoch; every dispatch write carries that
epoch and is checked against it in its own transaction (``PostgresStore``), so a deposed member that has not noticed
yet cannot change anything. A member whose connection fails, or whose heartbeat does not answer within a quarter of
``failover_seconds``, stops dispatching at once.

Notifications: every commit notifies channel ``qrmid`` of what it changed (``t:`` task id, ``l:`` lease id, ``d:``
resource, ``c:`` task id whose cancellation was asked, ``h:`` member told to hand over, ``x:`` resource whose line of
exclusive Acquires changed, ``r`` reload); one listening
connection per member reads the rows named and hands them to the core. After a lost connection it reads again
everything that may have changed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from qrmid.backends.base import BackendState, BackendStatus
from qrmid.core.cluster import Dispatch, MemberView, Replica
from qrmid.core.errors import NotFound, Unavailable
from qrmid.core.leases import Lease
from qrmid.core.tasks import Task
from qrmid.core.windows import Window
from qrmid.store.journal import SUBMITTING, read_lease, read_task, window_row
from qrmid.store.postgres import (
    ALLOCATION_COLUMNS,
    CHANNEL,
    INSERT_WINDOW,
    LEASE_COLUMNS,
    MEMBER_LOCK,
    NOTIFY,
    READ_TASKS,
    UPSERT_LEASE,
    WINDOW_COLUMNS,
    PostgresStore,
    lease_row,
    read_allocations,
    read_windows,
)

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between two rounds of heartbeat and election
LOCKS = 0x71726D69  # the advisory locks of dispatch (two-key form): this key, then the resource's lock_key
RESYNC_SLACK = 60.0  # seconds: after a lost listener, tasks that ended this long before it was lost are read again
EXCLUSIVE_LOCKS = 0x71726D6A  # the advisory locks of exclusive grants (two-key form): this key, then the resource's
WINDOW_LOCKS = 0x71726D6B  # the advisory locks of admins' windows (two-key form): this key, then the resource's
OVERLAPPING = f"""SELECT {WINDOW_COLUMNS} FROM windows WHERE resource = %(resource)s AND start_at < %(end)s
    AND end_at > %(start)s AND end_at > %(now)s AND id <> %(id)s ORDER BY start_at LIMIT 1"""
OTHER_EXCLUSIVE = """SELECT id FROM leases WHERE resource = %(resource)s AND mode = 'exclusive' AND expires_at > %(now)s
    AND id <> %(lease)s UNION ALL SELECT w.id FROM exclusive_waits w, exclusive_waits mine WHERE mine.id = %(waiter)s
    AND w.resource = %(resource)s AND w.until > %(now)s AND (w.asked_at, w.id) < (mine.asked_at, mine.id) LIMIT 1"""
WAITS = "SELECT id, resource, asked_at, until FROM exclusive_waits WHERE until > %s"
MEMBERS = """SELECT name, extract(epoch FROM started_at) AS started_at, extract(epoch FROM heartbeat) AS heartbeat_at,
    extract(epoch FROM now() - heartbeat) AS age, handover FROM members ORDER BY name"""
DISPATCHERS = f"""SELECT resource, dispatcher, epoch, extract(epoch FROM since) AS since FROM resource_epoch e
    WHERE dispatcher IS NOT NULL AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
    AND l.objsubid = 2 AND l.classid::bigint = {LOCKS} AND l.objid::bigint = e.lock_key) ORDER BY resource"""
STATES = "SELECT resource, state, reason, slots, target FROM resource_state"
ELECTED = """UPDATE resource_epoch SET epoch = epoch + 1, dispatcher = %s, since = now() WHERE resource = %s
    RETURNING epoch"""


class Members:
    """This member's place in the cluster: it campaigns for the resources in ``eligible`` (those it may dispatch),
    keeps ``replica`` (the broker) in step with the store, and answers admins' questions about the members.
    ``follows`` maps each resource dispatched only with another (a pool's members, the other pools sharing them) to
    that one, its group's head: a member campaigns for a head only when it may dispatch its whole group, for the rest
    of the group only while it dispatches the head, and gives them up when it no longer does."""

    def __init__(self, store: PostgresStore, replica: Replica, eligible: list[str], *, failover_seconds: float = 10.0,
                 on_reload: Callable[[], Awaitable[object]] | None = None,
                 follows: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.member = store.member
        self.replica = replica
        self.eligible = eligible
        self.follows = dict(follows or {})
        self.failover_seconds = failover_seconds
        self.on_reload = on_reload
        self.leading: dict[str, int] = {}  # resource -> epoch, while this member dispatches it
        self._keys: dict[str, int] = {}  # resource -> its lock_key
        self._held: set[str] = set()  # resources whose lock the election connection holds (fenced: not leading)
        self._notices: set[str] = set()
        self._noticed = asyncio.Event()
        self._listening = asyncio.Event()  # set once the listener has connected and read what it missed
        self._nudge = asyncio.Event()  # wakes the election round early (told to hand over, or back)
        self._since = time.time() - RESYNC_SLACK
        self._loops: list[asyncio.Task[None]] = []
        self._conn: psycopg.AsyncConnection[Any] | None = None  # the election connection, while it is up
        self._takeovers: set[asyncio.Task[None]] = set()
        self._closing = False
        store.on_fenced = lambda resource, task_ids: self._deposed(resource, task_ids)
        store.on_dropped = self.replica.take_back

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening and campaigning, once the store is started and the core restored; return once this member
        hears the others (or after ``connect_timeout`` seconds, listening on in the background)."""
        self._loops = [asyncio.create_task(self._listen(), name="qrmid cluster listener"),
                       asyncio.create_task(self._apply_loop(), name="qrmid cluster notices")]
        try:
            async with asyncio.timeout(self.store.connect_timeout):
                await self._listening.wait()
        except TimeoutError:
            log.warning("PostgreSQL at %s: member %s does not hear the other members yet; it serves meanwhile",
                        self.store.dsn, self.member)
        self._loops.append(asyncio.create_task(self._elect(), name="qrmid cluster election"))

    async def close(self) -> None:
        """Hand over the resources this member dispatches (the others take them over at once, re-attaching their
        tasks), then stop listening."""
        self._closing = True
        if self._conn is not None and not self._conn.closed:
            try:
                for name in [*self.leading, *(self._held - set(self.leading))]:
                    async with asyncio.timeout(self.failover_seconds):
                        await self._hand_over(self._conn, name, "it is stopping")
            except (psycopg.Error, OSError, TimeoutError) as exc:  # its locks go with its connection anyway
                log.warning("member %s could not hand over its resources one by one (%s); they are freed as it "
                            "disconnects", self.member, exc)
        loops = [*self._loops, *self._takeovers]
        while loops := [loop for loop in loops if not loop.done()]:  # again and again: a library's timed wait (the
            for loop in loops:  # connection pool's, on Python 3.11) may swallow a cancel, and the loop then runs on
                loop.cancel()
            await asyncio.wait(loops, timeout=TICK)

    def _conninfo(self, role: str) -> str:
        """The store's connection string for this member's ``role`` connection (its application name), with TCP
        keepalives on both ends so that a member or a server gone from the network is noticed within
        ``failover_seconds``: PostgreSQL then ends the session, and with it the member's locks."""
        idle = count = max(1, int(self.failover_seconds // 3))
        options = f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval=1 -c tcp_keepalives_count={count}"
        if role == "election":  # it sends a heartbeat every TICK: a member that stops sending them (hung,
            # stopped) loses its session, and its locks, as a dead one does
            options += f" -c idle_session_timeout={max(2000, int(self.failover_seconds * 500))}"
        return make_conninfo(self.store.conninfo, application_name=f"qrmid {self.member} {role}", keepalives=1,
                             keepalives_idle=idle, keepalives_interval=1, keepalives_count=count, options=options)

    # -- election ----------------------------------------------------------------------------------------------

    async def _elect(self) -> None:
        """Campaign for the eligible resources, forever: one round every ``TICK`` on a connection of its own; a
        lost connection ends every dispatch of this member, and a new one campaigns again."""
        failure = ""
        while True:
            conn = None
            try:
                conn = self._conn = await psycopg.AsyncConnection.connect(self._conninfo("election"), autocommit=True)
                self._held.clear()
                await conn.execute("SELECT pg_advisory_lock_shared(%s)", (MEMBER_LOCK,))
                if failure:
                    log.warning("PostgreSQL at %s: member %s is connected again for dispatch", self.store.dsn,
                                self.member)
                    failure = ""
                while True:
                    async with asyncio.timeout(self.failover_seconds / 4):
                        elected = await self._round(conn)
                    groups: dict[str, list[tuple[str, int]]] = {}
                    for name, epoch in elected:
                        groups.setdefault(self.follows.get(name, name), []).insert(0, (name, epoch))
                    for head, won in groups.items():  # a group's followers first, its head (the pool) last
                        takeover = asyncio.create_task(self._lead_all(conn, won), name=f"qrmid take over {head}")
                        self._takeovers.add(takeover)  # heartbeats go on meanwhile: a takeover may take a while
                        takeover.add_done_callback(self._takeovers.discard)
                    self._nudge.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(TICK):
                            await self._nudge.wait()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                reason = self.store.scrub(exc) if isinstance(exc, psycopg.Error) else "it did not answer in time"
                if reason != failure:
                    log.error("PostgreSQL at %s: member %s lost its connection for dispatch (%s): it dispatches "
                              "nothing until it is back", self.store.dsn, self.member, reason)
                failure = reason
            finally:
                self._lost()
                if conn is not None:
                    await conn.close()
            await asyncio.sleep(TICK)

    async def _round(self, conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, int]]:
        """One round: the heartbeat (which also proves the connection), then the locks of the eligible resources
        no one holds; the resources won, each with its new epoch (which fences the writes of its last dispatcher).
        Told to hand over, give up every resource instead."""
        cursor = await conn.execute("UPDATE members SET heartbeat = now() WHERE name = %s RETURNING handover",
                                    (self.member,))
        row = await cursor.fetchone()
        if self._closing:
            return []
        if row is None or row[0]:  # told to hand over (or the row is gone: it joins again at its restart)
            for name in [*self.leading, *(self._held - set(self.leading))]:
                await self._hand_over(conn, name, "it was told to")
            return []
        for name in [name for name in self.leading if name in self.follows]:
            if self.follows[name] not in self.leading:  # its head is dispatched elsewhere now: so is its group
                await self._hand_over(conn, name, "its pool is dispatched by another member")
        won = []
        eligible = set(self.eligible)
        for name in sorted(self.eligible, key=lambda name: name in self.follows):  # heads before their followers
            if name in self.leading:
                continue
            if name in self.follows and self.follows[name] not in self.leading:
                continue
            if not all(other in eligible for other, head in self.follows.items() if head == name):
                continue  # a pool it may not dispatch every member of
            if name not in self._held:  # held but fenced: its epoch moved on without this member noticing
                key = await self._key(conn, name)
                locked = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCKS, key))).fetchone()
                if not (locked and locked[0]):
                    continue
                self._held.add(name)
            row = await (await conn.execute(ELECTED, (self.member, name))).fetchone()
            epoch = int(row[0])  # type: ignore[index]
            self.store.dispatching(name, epoch)
            self.leading[name] = epoch
            won.append((name, epoch))
        return won

    async def _key(self, conn: psycopg.AsyncConnection[Any], name: str) -> int:
        if name not in self._keys:
            await conn.execute("INSERT INTO resource_epoch (resource) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
            row = await (await conn.execute("SELECT lock_key FROM resource_epoch WHERE resource = %s",
                                            (name,))).fetchone()
            self._keys[name] = int(row[0])  # type: ignore[index]
        return self._keys[name]

    async def _lead_all(self, conn: psycopg.AsyncConnection[Any], won: list[tuple[str, int]]) -> None:
        """Take over the resources of one group ``won`` in this round, one after another."""
        for name, epoch in won:
            await self._lead(conn, name, epoch)

    async def _lead(self, conn: psycopg.AsyncConnection[Any], name: str, epoch: int) -> None:
        """Dispatch resource ``name``, won at ``epoch``: the core takes over its tasks as a restart would."""
        started = time.monotonic()
        try:
            await self.replica.settle(name)  # what an earlier dispatch here left in flight lands (or is taken back)
            with contextlib.suppress(Exception):
                await self.store.durable()
            stored, submitting, held = await self._unfinished(name)
            await self.replica.lead(name, stored, submitting, held)
            await self._cancels(await self._read_cancels(None))
        except Exception:  # a failed takeover leaves the resource to another member
            log.exception("member %s could not take over dispatching %s", self.member, name)
            self._deposed(name, [])
            with contextlib.suppress(psycopg.Error):
                await self._unlock(conn, name)
            return
        if self.leading.get(name) != epoch:  # lost meanwhile (its connection, or fenced)
            self.replica.step_down(name)
            return
        log.info("member %s dispatches %s from now on (epoch %d, took over in %.2f s)", self.member, name, epoch,
                 time.monotonic() - started)

    async def _hand_over(self, conn: psycopg.AsyncConnection[Any], name: str, why: str) -> None:
        """Give resource ``name`` up for another member: stop dispatching, let the submission in flight and the
        writes of this dispatch land, then free its lock."""
        await self.replica.hand_over(name)
        with contextlib.suppress(Exception):
            await self.store.durable()
        self.store.dispatching(name, None)
        self.leading.pop(name, None)
        await self._unlock(conn, name)
        log.warning("member %s handed over %s: %s", self.member, name, why)

    async def _unlock(self, conn: psycopg.AsyncConnection[Any], name: str) -> None:
        self._held.discard(name)
        await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCKS, self._keys[name]))

    def _deposed(self, name: str, fenced: list[str]) -> None:
        """This member no longer dispatches ``name``: ``fenced`` tasks' refused writes are taken back."""
        self.store.dispatching(name, None)
        self.leading.pop(name, None)
        self.replica.step_down(name, fenced)

    def _lost(self) -> None:
        """The election connection is gone, and with it every lock: stop dispatching everything."""
        for name in list(self.leading):
            self._deposed(name, [])

    async def _unfinished(self, name: str) -> tuple[list[Task], set[str], set[str]]:
        """Resource ``name``'s unfinished tasks as the store holds them, those of them being submitted, and the
        finished ones whose backend job was not released."""
        rows = await self._query(READ_TASKS + " WHERE t.resource = %s AND (t.ended_at IS NULL OR (r.remote_ref IS NOT "
                                 "NULL AND NOT r.released)) ORDER BY t.seq", (name,))
        tasks = [read_task(row) for row in rows]
        submitting = {row["id"] for row in rows if row["state"] == SUBMITTING}
        held = {task.id for task in tasks if task.state.terminal}
        return tasks, submitting, held

    # -- notifications -----------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Collect the notifications of channel ``qrmid`` on a connection of its own; after connecting (again),
        read what may have changed while it was not listening."""
        failure = ""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo("listener"), autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if failure:
                        log.warning("PostgreSQL at %s: member %s listens again", self.store.dsn, self.member)
                        failure = ""
                    await self._resync()
                    self._listening.set()
                    async for notify in conn.notifies():
                        self._notices.add(notify.payload)
                        self._noticed.set()
            except (psycopg.Error, OSError) as exc:
                reason = self.store.scrub(exc) if isinstance(exc, psycopg.Error) else str(exc)
                if reason != failure:
                    log.error("PostgreSQL at %s: member %s stopped hearing of other members' changes (%s); it "
                              "reconnects", self.store.dsn, self.member, reason)
                failure = reason
                self._since = time.time() - RESYNC_SLACK
            await asyncio.sleep(TICK)

    async def _apply_loop(self) -> None:
        """Apply the collected notifications, all that piled up at once."""
        while True:
            await self._noticed.wait()
            self._noticed.clear()
            notices, self._notices = self._notices, set()
            try:
                await self._apply(notices)
            except psycopg.Error as exc:  # read again once the store answers
                log.warning("PostgreSQL at %s: could not read what other members changed (%s); retrying",
                            self.store.dsn, self.store.scrub(exc))
                self._notices |= notices
                self._noticed.set()
                await asyncio.sleep(TICK)

    async def _apply(self, notices: set[str]) -> None:
        by_kind: dict[str, list[str]] = {}
        for notice in notices:
            kind, _, key = notice.partition(":")
            by_kind.setdefault(kind, []).append(key)
        if tasks := by_kind.get("t"):
            for row in await self._query(READ_TASKS + " WHERE t.id = ANY(%s) ORDER BY t.seq", (tasks,)):
                self.replica.mirror(read_task(row))
        if leases := by_kind.get("l"):
            stored = {row["id"]: read_lease(row) for row in await self._query(
                f"SELECT {LEASE_COLUMNS} FROM leases WHERE id = ANY(%s)", (leases,))}
            for lease_id in leases:
                self.replica.mirror_lease(lease_id, stored.get(lease_id))
        if drains := by_kind.get("d"):
            reasons = {row["resource"]: row["reason"] for row in await self._query(
                "SELECT resource, reason FROM drains WHERE resource = ANY(%s)", (drains,))}
            for name in drains:
                self.replica.mirror_drain(name, reasons.get(name))
        if windows := by_kind.get("w"):
            await self._windows(windows)
        if waited := by_kind.get("x"):
            await self._waits(waited)
        if accounts := by_kind.get("a"):
            await self._allocations(accounts)
        if names := by_kind.get("s"):
            await self._states(await self._query(STATES + " WHERE resource = ANY(%s)", (names,)))
        if cancels := by_kind.get("c"):
            await self._cancels(await self._read_cancels(cancels))
        if self.member in by_kind.get("h", []):
            self._nudge.set()
        if any(member != self.member for member in by_kind.get("r", [])) and self.on_reload is not None:
            await self.on_reload()

    async def _resync(self) -> None:
        """Read again everything that may have changed while this member was not listening: unfinished tasks and
        those that ended since, leases, drains and cancellations asked."""
        for row in await self._query(READ_TASKS + " WHERE t.ended_at IS NULL OR t.ended_at >= %s ORDER BY t.seq",
                                     (self._since,)):
            self.replica.mirror(read_task(row))
        stored = {row["id"]: read_lease(row) for row in await self._query(f"SELECT {LEASE_COLUMNS} FROM leases", ())}
        for lease_id in self.replica.lease_ids() | set(stored):
            self.replica.mirror_lease(lease_id, stored.get(lease_id))
        reasons = {row["resource"]: row["reason"] for row in await self._query("SELECT resource, reason FROM drains",
                                                                              ())}
        for name in self.replica.resource_names():
            self.replica.mirror_drain(name, reasons.get(name))
        await self._cancels(await self._read_cancels(None))
        await self._windows(None)
        await self._waits(None)
        await self._allocations(None)
        await self._states(await self._query(STATES, ()))

    async def _allocations(self, accounts: list[str] | None) -> None:
        """Take the allocations of ``accounts`` (None: every account) as the store holds them."""
        if accounts is None:
            stored = read_allocations(await self._query(f"SELECT {ALLOCATION_COLUMNS} FROM allocations", ()))
            accounts = [*self.replica.allocations.accounts() | {value.account for value in stored}]
        else:
            stored = read_allocations(await self._query(
                f"SELECT {ALLOCATION_COLUMNS} FROM allocations WHERE account = ANY(%s)", (accounts,)))
        for account in accounts:
            self.replica.allocations.mirror(account, [value for value in stored if value.account == account])

    async def _windows(self, window_ids: list[str] | None) -> None:
        """Take the admins' windows ``window_ids`` (None: all) as the store holds them."""
        if window_ids is None:
            stored = {w.id: w for w in read_windows(await self._query(f"SELECT {WINDOW_COLUMNS} FROM windows", ()))}
            window_ids = [*self.replica.windows.admin_ids() | set(stored)]
        else:
            stored = {w.id: w for w in read_windows(await self._query(
                f"SELECT {WINDOW_COLUMNS} FROM windows WHERE id = ANY(%s)", (window_ids,)))}
        for window_id in window_ids:
            self.replica.windows.mirror(window_id, stored.get(window_id))

    async def _states(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            status = BackendStatus(BackendState(row["state"]), row["reason"])
            await self.replica.mirror_state(row["resource"], status, row["slots"], row["target"] or "")

    async def _read_cancels(self, task_ids: list[str] | None) -> list[dict[str, Any]]:
        if task_ids is None:
            return await self._query("SELECT task_id, reason FROM cancels ORDER BY at", ())
        return await self._query("SELECT task_id, reason FROM cancels WHERE task_id = ANY(%s) ORDER BY at",
                                 (task_ids,))

    async def _cancels(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.replica.cancel_requested(row["task_id"], row["reason"])

    async def _query(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        async with self.store.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(sql, params)
            return await cursor.fetchall()

    # -- what admins see and ask ------------------------------------------------------------------------------

    async def members(self) -> list[MemberView]:
        dispatchers = await self.dispatchers()
        return [MemberView(row["name"], float(row["started_at"]), float(row["heartbeat_at"]),
                           healthy=float(row["age"]) <= self.failover_seconds, handing_over=row["handover"],
                           dispatches=tuple(d.resource for d in dispatchers if d.member == row["name"]))
                for row in await self._query(MEMBERS, ())]

    async def dispatchers(self) -> list[Dispatch]:
        return [Dispatch(row["resource"], row["dispatcher"], int(row["epoch"]), float(row["since"]))
                for row in await self._query(DISPATCHERS, ())]

    async def fetch(self, task_id: str) -> None:
        for row in await self._read(READ_TASKS + " WHERE t.id = %s", (task_id,)):
            self.replica.mirror(read_task(row))

    async def fetch_request(self, owner: str, request_id: str) -> str | None:
        rows = await self._read("SELECT task_id FROM request_ids WHERE owner = %s AND client_request_id = %s",
                                (owner, request_id))
        if not rows:
            return None
        await self.fetch(rows[0]["task_id"])
        return str(rows[0]["task_id"])

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        """A read for a caller: no rows for values the store cannot hold; Unavailable when it cannot be read."""
        try:
            return await self._query(sql, params)
        except psycopg.DataError:  # e.g. a NUL byte: no row can hold it
            return []
        except psycopg.Error as exc:  # lost, or no connection to be had (PoolTimeout)
            raise Unavailable(f"{self.store.name} cannot be read ({self.store.scrub(exc)}): retry later") from None

    async def handover(self, member: str, back: bool = False) -> MemberView:
        async with self.store.connection() as conn, conn.transaction():
            updated = await conn.execute("UPDATE members SET handover = %s WHERE name = %s", (not back, member))
            if updated.rowcount:
                await conn.execute(NOTIFY, (f"h:{member}",))
        views = {view.name: view for view in await self.members()}
        if member not in views:
            raise NotFound(f"no member named {member!r} (members: {', '.join(views) or 'none'})")
        return views[member]

    async def claim_exclusive(self, lease: Lease, waiter_id: str) -> bool:
        """Record exclusive ``lease`` unless another live exclusive lease of its resource is stored, or an exclusive
        Acquire asked before waiter ``waiter_id`` still waits, in one transaction under the resource's advisory lock,
        so that two members never grant two at once and grant in the order asked; whether it was recorded."""
        try:
            async with self.store.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (EXCLUSIVE_LOCKS, lease.resource))
                other = await conn.execute(OTHER_EXCLUSIVE, {"resource": lease.resource, "now": time.time(),
                                                             "lease": lease.id, "waiter": waiter_id})
                if await other.fetchone() is not None:
                    return False
                await conn.execute(UPSERT_LEASE, lease_row(lease))
                await conn.execute(NOTIFY, (f"l:{lease.id}",))
        except psycopg.Error as exc:
            raise Unavailable(f"{self.store.name} cannot record the exclusive lease ({self.store.scrub(exc)}): retry "
                              "later") from None
        return True

    async def claim_window(self, window: Window) -> Window | None:
        """Record admin window ``window`` unless a stored window of its resource overlaps it, in one transaction under
        the resource's advisory lock, so that two members never create overlapping windows; the overlapping window,
        else None once recorded."""
        try:
            async with self.store.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (WINDOW_LOCKS, window.resource))
                cursor = conn.cursor(row_factory=dict_row)
                await cursor.execute(OVERLAPPING, {"resource": window.resource, "start": window.start,
                                                   "end": window.end, "now": time.time(), "id": window.id})
                if overlapping := read_windows(await cursor.fetchall()):
                    return overlapping[0]
                await conn.execute(INSERT_WINDOW, window_row(window))
                await conn.execute(NOTIFY, (f"w:{window.id}",))
        except psycopg.Error as exc:
            raise Unavailable(f"{self.store.name} cannot record the window ({self.store.scrub(exc)}): retry "
                              "later") from None
        return None

    async def enter_line(self, resource: str, waiter_id: str, asked_at: float, until: float) -> None:
        try:
            async with self.store.connection() as conn, conn.transaction():
                await conn.execute("INSERT INTO exclusive_waits (id, resource, member, asked_at, until) VALUES (%s, %s, "
                                   "%s, %s, %s)", (waiter_id, resource, self.member, asked_at, until))
                await conn.execute(NOTIFY, (f"x:{resource}",))
        except psycopg.Error as exc:
            raise Unavailable(f"{self.store.name} cannot record the exclusive Acquire's place in line "
                              f"({self.store.scrub(exc)}): retry later") from None

    async def leave_line(self, resource: str, waiter_id: str) -> None:
        try:
            async with self.store.connection() as conn, conn.transaction():
                await conn.execute("DELETE FROM exclusive_waits WHERE id = %s", (waiter_id,))
                await conn.execute(NOTIFY, (f"x:{resource}",))
        except psycopg.Error as exc:  # the others hold the resource's tasks back until its wait would have ended
            log.warning("%s: an exclusive Acquire that left the line of %s could not be removed from the store (%s)",
                        self.store.name, resource, self.store.scrub(exc))

    async def _waits(self, resources: list[str] | None) -> None:
        """Take the exclusive Acquires waiting for ``resources`` (None: every resource) as the store holds them."""
        rows = await self._query(WAITS, (time.time(),))
        for name in resources if resources is not None else self.replica.resource_names():
            self.replica.mirror_waits(name, [(row["id"], row["asked_at"], row["until"]) for row in rows
                                             if row["resource"] == name])

    async def announce_reload(self) -> None:
        """Have every other member re-read its own config file, as this one just did."""
        async with self.store.connection() as conn:
            await conn.execute(NOTIFY, ("r:" + self.member,))
