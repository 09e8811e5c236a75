"""Pools: a resource that routes each of its tasks to one of several member resources when it can start there.

A pool has its own queue (priority classes, fair share, positions, gates: as any resource). Its dispatch loop binds
the next task only once a member can start it at once: the member is up (online, not draining, none of its gates
holds the task back), has a free slot and nothing of its own queued. Which member takes it is the pool's policy:

- ``least-busy``: the member where the task starts first; among members free now, the one least loaded (its remote
  queue when the backend reports one, then its busy slots), in the pool's order on a tie;
- ``ordered``: the first member that is up, in the pool's order; the task waits for it while it is only busy, and goes
  to the next one only while it is down.

The ``fallback`` member (a simulator, say) is used only for tasks whose caller allowed it, and only when no other
member that accepts the task is up. A task goes only to members whose device accepts its payload (each member's
adapter checks it at submit; a payload no member accepts is refused there, naming each member's objection).

A bound task is handed to the member's scheduler, which submits and follows it as its own: the member's slots are
shared by its own tasks and the pool's, never oversubscribed. The task keeps the pool as its resource and records
the member (``Task.member``, journaled), so after a restart it is followed on that member; a task not bound yet is
queued on the pool again.

In cluster mode a pool and its members are dispatched by one member (``qrmid.store.members`` elects them together),
so binding hands a task to a local scheduler as on a daemon of its own. Standbys mirror the pool's queue and each
task's member; a member elected to dispatch the pool follows each bound task on its member again, and queues on
the pool again the tasks whose job does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from enum import Enum
from typing import Any

from qrmid.backends.base import Adapter, BackendState, BackendStatus, Busy, InvalidPayload, JobStatus, Output
from qrmid.backends.checks import Check
from qrmid.backends.payloads import Payload
from qrmid.core.errors import FailedPrecondition
from qrmid.core.gates import Hold
from qrmid.core.queue import SchedulingPolicy
from qrmid.core.resource import Resource, ResourceStatus, ResourceView
from qrmid.core.scheduler import Scheduler, log_context
from qrmid.core.tasks import PayloadUnreadable, Task, TaskState

log = logging.getLogger(__name__)

RECHECK_SECONDS = 5.0  # after a restart, how often a queued task's payload is checked again while members cannot
# Keys of an IBM device's configuration that name the backend rather than describe the device.
NAMING_KEYS = frozenset({"backend_name", "backend_version", "online_date", "description"})


class Route(Enum):
    """How a pool picks the member of a task."""

    LEAST_BUSY = "least-busy"
    ORDERED = "ordered"


PayloadCheck = Callable[[str, Adapter, Payload], Awaitable[int]]  # a member's check of an owner's payload: its shots


async def _unchecked(owner: str, adapter: Adapter, payload: Payload) -> int:
    """The checks of a pool no broker serves yet: none can be made."""
    raise Busy("payload checks are not set up yet")


class PoolScheduler(Scheduler):
    """A pool's queue and dispatch loop: binds each task to a member that can start it now and hands it over."""

    def __init__(self, name: str, members: Sequence[Resource], route: Route, fallback: Resource | None, *,
                 queue_limit: int, policy: SchedulingPolicy | None = None) -> None:
        super().__init__(name, Members(members), queue_limit=queue_limit, poll_interval=1.0, policy=policy)
        self.members = list(members)
        self.route = route
        self.fallback = fallback
        self._by_name = {member.name: member for member in members}
        self.check: PayloadCheck = _unchecked  # the broker's payload checks, run for each member
        self._accepted: dict[Task, frozenset[str]] = {}  # queued tasks: the members whose device accepts them
        self._rechecking: set[Task] = set()  # queued again after a restart, their payload not checked yet
        self._bound: dict[Task, Resource] = {}  # tasks handed to a member and not finished
        self._following: set[asyncio.Task[None]] = set()
        for member in members:
            member.scheduler.watchers.append(self.wake)  # a member's slot, queue or state changed

    @property
    def slots(self) -> int:
        return sum(member.scheduler.slots for member in self.members)

    @property
    def running(self) -> int:
        """How many of the pool's tasks are handed to a member and not finished."""
        return len(self._bound)

    @property
    def dispatched(self) -> list[Task]:
        """The pool's tasks handed to a member and not finished."""
        return list(self._bound)

    def accepted(self, task: Task, members: frozenset[str]) -> None:
        """Record which ``members`` accept queued ``task``'s payload (before it is queued)."""
        self._accepted[task] = members

    async def accepting(self, payload: Payload, owner: str, allow_fallback: bool) -> tuple[int, frozenset[str]]:
        """The shots of ``payload`` and the members whose device accepts it (each member's adapter checks it);
        InvalidPayload naming each member's objection when none that may run it does, Busy when none can check it
        now."""
        shots, accepted, objections, busy = 0, set(), [], []
        for member in self.members:
            if member is self.fallback and not allow_fallback:
                continue
            if payload.kind not in member.adapter.payload_kinds:
                objections.append(f"{member.name} does not take {payload.kind.value} payloads")
                continue
            try:
                shots = max(shots, await self.check(owner, member.adapter, payload))
            except InvalidPayload as exc:
                objections.append(f"{member.name}: {exc}")
            except Busy as exc:
                busy.append(f"{member.name}: {exc}")
            else:
                accepted.add(member.name)
        if not accepted and busy:
            raise Busy("; ".join(busy))
        if not accepted:
            unused = f" (its fallback {self.fallback.name} runs only tasks that allow a fallback)" \
                if self.fallback is not None and not allow_fallback else ""
            raise InvalidPayload(f"no member of pool {self.name!r} accepts it{unused}: {'; '.join(objections)}")
        return shots, frozenset(accepted)

    def member_of(self, task: Task) -> Resource:
        """The member ``task`` is bound to; RuntimeError when that resource is not (or no longer) a member."""
        try:
            return self._by_name[task.member]
        except KeyError:
            raise RuntimeError(f"its member {task.member!r} is no longer a member of pool {self.name!r}") from None

    def holds(self, task: Task) -> bool:
        member = self._bound.get(task)
        return member.scheduler.holds(task) if member is not None else super().holds(task)

    def position(self, task: Task) -> int:
        member = self._bound.get(task)
        return member.scheduler.position(task) if member is not None else super().position(task)

    def estimated_start(self, task: Task) -> float | None:
        member = self._bound.get(task)
        return member.scheduler.estimated_start(task) if member is not None else super().estimated_start(task)

    def hold(self, task: Task) -> Hold | None:
        """The pool's own gates' hold, else (while no member could take the task) why each member cannot; a bound
        task's hold is its member's."""
        member = self._bound.get(task)
        if member is not None:
            return member.scheduler.hold(task)
        held = super().hold(task)
        if held is not None:
            return held
        up, reasons = self._eligible(task)
        return None if up else Hold(f"no member of pool {self.name!r} can take it now: {'; '.join(reasons)}")

    def stop(self, task: Task, reason: str) -> None:
        member = self._bound.get(task)
        if member is not None:
            member.scheduler.stop(task, reason)
            return
        self._accepted.pop(task, None)
        self._rechecking.discard(task)
        super().stop(task, reason)

    def adopt(self, task: Task, ref: str | None) -> None:
        """Take back a task from before a restart: one bound to a member is followed there when its job exists
        (``ref``), any other is queued on the pool again (its binding is dropped)."""
        if task.member and ref is not None:
            self._queue.dispatched(task)
            self._hand(task, self.member_of(task), ref)
            return
        if task.member and self.leading:  # a standby keeps the binding its dispatcher recorded
            task.member = ""
            task.events.task_bound(task)
        self._rechecking.add(task)
        super().adopt(task, None)
        self._spawn(self._recheck(task))

    def mirrored(self, task: Task) -> None:
        if task.state is not TaskState.QUEUED:
            self._accepted.pop(task, None)
            self._rechecking.discard(task)
        super().mirrored(task)

    def step_down(self) -> None:
        """Stop dispatching: bound tasks are left on their members for the pool's next dispatcher."""
        super().step_down()
        for task in self._bound:
            if not task.state.terminal:
                self._elsewhere[task] = None
        self._bound.clear()

    def lead(self, attached: dict[Task, str | None]) -> None:
        """Dispatch from now on (elected): follow each bound task of ``attached`` on its member by its reference;
        queue on the pool again, first in line, those whose job does not exist and those bound but not started."""
        for task, ref in attached.items():
            self._elsewhere.pop(task, None)
            if task in self._queue:
                self._queue.remove(task)
            if ref is not None and task.member:
                self._queue.dispatched(task)
                self._hand(task, self.member_of(task), ref)
                continue
            self._queue.push_front(task)
            if task not in self._accepted and task not in self._rechecking:
                self._rechecking.add(task)
                self._spawn(self._recheck(task))
        self.leading = True
        for task in [task for task in self._queue if task.member]:
            task.member = ""
            task.events.task_bound(task)
        self.wake()

    async def run(self) -> None:
        """Bind queued tasks to members as members can start them, forever."""
        try:
            while True:
                self._wakeup.clear()
                picked = self._pick() if self._queue.ready() and self.dispatching and self.leading else None
                if picked is None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._gates_change()):
                            await self._wakeup.wait()
                    continue
                task, member = picked
                self._accepted.pop(task, None)
                task.member = member.name
                task.events.task_bound(task)
                log.info("task %s of pool %s bound to %s", task.id, self.name, member.name, extra=log_context(task))
                self._hand(task, member, None)
        finally:
            for follower in self._following:
                follower.cancel()

    def _pick(self) -> tuple[Task, Resource] | None:
        """The next task in fair order that every gate admits and a member can start now, with that member."""
        now = time.time()
        chosen: dict[Task, Resource] = {}

        def admit(task: Task) -> bool:
            if any(gate.hold(task, now) is not None for gate in self.gates):
                return False
            member = self._choose(task)
            if member is not None:
                chosen[task] = member
            return member is not None

        try:
            task = self._queue.pop(admit)
        except IndexError:
            return None
        return task, chosen[task]

    def _choose(self, task: Task) -> Resource | None:
        """The member to bind ``task`` to now, by the pool's policy; None when none can start it now."""
        up, _ = self._eligible(task)
        free = [member for member in up if _free(member)]
        if not free:
            return None
        return min(free, key=_load) if self.route is Route.LEAST_BUSY else free[0]

    def _eligible(self, task: Task) -> tuple[list[Resource], list[str]]:
        """The members ``task`` may go to as things stand (busy or not; for ``ordered``, the first such member),
        and why each other member that accepts it cannot take it. The fallback counts only for a task that allows
        it, and only when no other member is up."""
        if task in self._rechecking:
            return [], ["its payload is being checked against the members again, after the daemon's restart"]
        accepted = self._accepted.get(task)
        up: list[Resource] = []
        reasons: list[str] = []
        regular = [member for member in self.members if member is not self.fallback]
        fallback = [self.fallback] if self.fallback is not None and task.allow_fallback else []
        for candidates in (regular, fallback):
            for member in candidates:
                if accepted is not None and member.name not in accepted:
                    continue
                why = _unavailable(member, task)
                if why:
                    reasons.append(why)
                else:
                    up.append(member)
            if up:
                break
        if not reasons and not up:
            reasons.append("none of its members accepts the task's payload")
        return (up[:1] if self.route is Route.ORDERED else up), reasons

    def _hand(self, task: Task, member: Resource, ref: str | None) -> None:
        """Give ``task`` to ``member``'s scheduler (to submit, or to follow by ``ref``) and follow it to its end."""
        self._bound[task] = member
        member.scheduler.adopt(task, ref)
        self._spawn(self._follow_bound(task))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on its own, for as long as the pool dispatches."""
        follower = asyncio.create_task(work)
        self._following.add(follower)
        follower.add_done_callback(self._following.discard)

    async def _recheck(self, task: Task) -> None:
        """Find which members accept a task queued again after a restart (what its check found is not journaled),
        retrying while no member can check it; a task no member accepts any more fails."""
        while task in self._rechecking:
            try:
                _, accepted = await self.accepting(await task.full_payload(), task.owner, task.allow_fallback)
            except Busy:
                await asyncio.sleep(RECHECK_SECONDS)
                continue
            except (InvalidPayload, PayloadUnreadable) as exc:
                if not self.leading:  # the dispatcher decides; this member once it dispatches the pool
                    await asyncio.sleep(RECHECK_SECONDS)
                    continue
                if task in self._rechecking:
                    self._rechecking.discard(task)
                    self._queue.remove(task)
                    task.transition(TaskState.FAILED, f"not runnable after the daemon's restart: {exc}")
                    self.on_done(task)
                return
            if task in self._rechecking:
                self._rechecking.discard(task)
                self._accepted[task] = accepted
                self.wake()

    async def _follow_bound(self, task: Task) -> None:
        """Once a bound task ended on its member: free its place in the pool, charge its usage to the pool's fair
        share and fold its run time into the pool's estimates."""
        await task.wait()
        if self._bound.pop(task, None) is None:  # left to another member's dispatch meanwhile
            return
        self._queue.finished(task)
        view = task.view
        if view.started_at is not None and view.ended_at is not None:
            seconds = max(view.ended_at - view.started_at, 0.0)
            self.run_seconds = seconds if self.run_seconds is None else 0.8 * self.run_seconds + 0.2 * seconds
            self._queue.expected_seconds = self.run_seconds
        self.wake()


def _unavailable(member: Resource, task: Task) -> str:
    """Why ``member`` cannot take ``task`` now, busy slots aside; '' when it can."""
    view = member.view()
    if view.status is not ResourceStatus.ONLINE:
        return f"{member.name} is {view.status.value}" + (f" ({view.status_reason})" if view.status_reason else "")
    if not member.scheduler.leading:
        return f"{member.name} is dispatched by another cluster member"
    held = member.scheduler.hold(task)
    return f"{member.name}: {held.reason}" if held is not None else ""


def _free(member: Resource) -> bool:
    """Whether ``member`` starts a task handed to it now: a slot is free and none of its own tasks waits."""
    scheduler = member.scheduler
    return scheduler.dispatching and not scheduler.queued and scheduler.running < scheduler.slots


def _load(member: Resource) -> tuple[int, float]:
    """How busy ``member`` is, least first: the jobs waiting on its backend when it says, then its busy slots."""
    scheduler = member.scheduler
    return member.backend.remote_queue or 0, scheduler.running / max(scheduler.slots, 1)


class Pool(Resource):
    """A resource whose tasks run on member resources (see the module's docstring)."""

    scheduler: PoolScheduler

    def __init__(self, name: str, members: Sequence[Resource], route: Route, fallback: Resource | None, *,
                 queue_limit: int, policy: SchedulingPolicy | None = None, max_leases: int = 0) -> None:
        scheduler = PoolScheduler(name, members, route, fallback, queue_limit=queue_limit, policy=policy)
        super().__init__(name, "pool", scheduler.adapter, scheduler, status_interval=3600.0, max_leases=max_leases)
        self.members = list(members)
        self.route = route
        self.fallback = fallback
        self.backend = BackendStatus(BackendState.ONLINE)  # the pool itself always takes work: its view reads members
        self.checked.set()

    def view(self) -> ResourceView:
        """Online when some member is; the members' slots together; the pool's own queue and tasks."""
        views = [member.view() for member in self.members]
        if self.draining or self.retiring:
            status = ResourceStatus.DRAINING
            reason = self.drain_reason or "drained by an admin: running tasks finish, no new ones start"
        else:
            states = {view.status for view in views}
            status = next((state for state in (ResourceStatus.ONLINE, ResourceStatus.PAUSED, ResourceStatus.DRAINING)
                           if state in states), ResourceStatus.OFFLINE)
            reason = "" if status is ResourceStatus.ONLINE else "; ".join(
                f"{view.name} is {view.status.value}" + (f" ({view.status_reason})" if view.status_reason else "")
                for view in views)
        online = status is ResourceStatus.ONLINE
        return ResourceView(self.name, self.type, status, reason, sum(view.slots_total for view in views),
                            sum(view.slots_free for view in views) if online else 0, self.scheduler.queued,
                            self.scheduler.running, self.adapter.payload_kinds,
                            members=tuple(member.name for member in self.members), pool_policy=self.route.value,
                            fallback=self.fallback.name if self.fallback is not None else "")

    async def target(self) -> str:
        """The members' device description when they describe the same device (the fallback aside): the same
        JSON, or for IBM the same configuration but for the backend's name; FAILED_PRECONDITION naming the members
        otherwise."""
        members = [member for member in self.members if member is not self.fallback]
        targets = [await member.target() for member in members]
        if len({_device(target) for target in targets}) == 1:
            return targets[0]
        names = ", ".join(member.name for member in members)
        raise FailedPrecondition(f"pool {self.name!r} has no single target: its members ({names}) describe different "
                                 "devices; ask GetTarget of the member you transpile for, then submit to that member, "
                                 "or to the pool when every member accepts the circuit")

    async def run(self) -> None:
        """Bind tasks to members, forever (the members check their own backends)."""
        await self.scheduler.run()


def runs_on(resource: Resource, task: Task) -> Resource:
    """The resource whose backend runs ``task`` of ``resource``: its member for a pool's bound task (RuntimeError
    when that is no longer a member), else ``resource`` itself."""
    return resource.scheduler.member_of(task) if isinstance(resource, Pool) and task.member else resource


def _device(target: str) -> str:
    """What of a device description two members must share: the whole description, or an IBM backend's
    configuration without the keys that name the backend."""
    try:
        described: Any = json.loads(target)
    except ValueError:
        return target
    if isinstance(described, dict) and isinstance(described.get("configuration"), dict):
        described = {key: value for key, value in described["configuration"].items() if key not in NAMING_KEYS}
    return json.dumps(described, sort_keys=True)


class Members(Adapter):
    """What the resource machinery reads of a pool as of a backend: its members' payload kinds and slots together.
    A pool never submits a job itself (its scheduler hands each task to a member's), so the job calls refuse."""

    def __init__(self, members: Sequence[Resource]) -> None:
        self.members = list(members)
        self.remote = any(member.adapter.remote for member in members)  # some of its tasks' jobs outlive the daemon
        self.payload_kinds = frozenset().union(*(member.adapter.payload_kinds for member in members))

    @property
    def slots(self) -> int:
        return sum(member.scheduler.slots for member in self.members)

    async def status(self) -> BackendStatus:
        return BackendStatus(BackendState.ONLINE)

    async def target(self) -> str:
        raise FailedPrecondition("a pool's target is its members' (Pool.target)")

    def metadata(self) -> dict[str, str]:
        return {"members": ",".join(member.name for member in self.members)}

    def validate(self, payload: Payload) -> int | Check:
        raise InvalidPayload("a pool's payloads are checked by its members (Pool.accepting)")

    async def submit(self, task_id: str, payload: Payload) -> str:
        raise RuntimeError("a pool's tasks are submitted by its members")

    async def poll(self, ref: str) -> JobStatus:
        raise RuntimeError("a pool's tasks are followed by its members")

    async def cancel(self, ref: str) -> None:
        raise RuntimeError("a pool's tasks are cancelled by its members")

    async def output(self, ref: str) -> Output:
        raise RuntimeError("a pool's tasks' results come from its members")
