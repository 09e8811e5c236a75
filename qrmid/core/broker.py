"""The broker: the registry of resources, the task index and the lease table, behind every QRMI operation."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from qrmid.backends.base import Adapter, BackendStatus, Busy, InvalidPayload
from qrmid.backends.payloads import Payload
from qrmid.core.allocations import Allocations
from qrmid.core.cluster import Membership
from qrmid.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from qrmid.core.events import Events
from qrmid.core.exclusive import LeaseGate, Waiter
from qrmid.core.leases import Lease, LeaseMode, LeaseTable
from qrmid.core.pool import Pool, runs_on
from qrmid.core.resource import Resource
from qrmid.core.scheduler import log_context
from qrmid.core.slurm import SlurmJobs
from qrmid.core.tasks import PayloadStore, Task, TaskState, TaskView
from qrmid.core.validation import Validation
from qrmid.core.windows import Windows

log = logging.getLogger(__name__)

MAX_REQUEST_ID = 128
FIRST_CHECK_SECONDS = 5.0
CANCEL_WAIT = 10.0  # how long a cancel waits for the member that dispatches the task (cluster mode)


@dataclass(frozen=True, slots=True)
class Policy:
    """Daemon-wide rules for tasks and leases."""

    max_payload_bytes: int = 8 << 20
    max_queued_bytes_per_user: int = 256 << 20  # payload bytes one user may have queued, all resources together
    max_queued_bytes_per_resource: int = 1 << 30  # payload bytes queued on one resource, all users together
    max_leases_per_user: int = 1_000  # live leases one user may hold, all resources together
    require_lease: bool = False
    cancel_on_release: bool = True
    retain_tasks: int = 10_000
    list_page_size: int = 1000  # most tasks in one listing's page
    lease_check_interval: float = 5.0
    exclusive_wait: float = 300.0  # how long an exclusive Acquire naming no wait may wait for its grant
    max_exclusive_wait: float = 3600.0  # the longest wait an exclusive Acquire may ask for


class Broker:
    """Owns the resources, the tasks and the leases; every API call lands on one of its methods."""

    def __init__(self, resources: Iterable[Resource], leases: LeaseTable, policy: Policy) -> None:
        self.resources = {resource.name: resource for resource in resources}
        self.leases = leases
        self.policy = policy
        self.accepting = True
        self.events = Events()
        self._tasks: dict[str, Task] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._requests: dict[tuple[str, str], str] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._accepting: set[asyncio.Task[Unavailable | None]] = set()  # tasks waiting for their record
        self.slurm: SlurmJobs | None = None  # set when [slurm] check_jobs is on
        self.payloads: PayloadStore | None = None  # where large queued payloads wait (none: in memory)
        self.validation = Validation()  # the daemon sets one from [validation]
        self.cluster: Membership | None = None  # cluster mode: the members sharing the store
        self.lease_gates: dict[str, LeaseGate] = {}  # each resource's exclusive line and lease gate
        self.allocations = Allocations(self.events)  # budgets per account: checked at StartTask, charged at the end
        self.allocations.estimate = lambda name: (self.resources[name].scheduler.run_seconds or 0.0) \
            if name in self.resources else 0.0
        self.events.subscribe(self.allocations)
        self.windows = Windows(lambda: self.resources, self.events)  # reservations and maintenance windows
        for resource in self.resources.values():
            self._bind(resource)

    async def start(self) -> None:
        """Start every adapter and dispatching. Each backend's first status check gets a few seconds; one
        that is unreachable stays OFFLINE and is checked again on its interval, never holding up the rest."""
        await asyncio.gather(*(resource.adapter.start() for resource in self.resources.values()))
        self._loops = [asyncio.create_task(resource.run(), name=f"qrmid resource {name}")
                       for name, resource in self.resources.items()]
        checks = [asyncio.create_task(resource.checked.wait()) for resource in self.resources.values()
                  if resource.dispatch]  # a cluster member without credentials waits for its dispatcher's word
        if checks:
            _, late = await asyncio.wait(checks, timeout=FIRST_CHECK_SECONDS)
            for check in late:
                check.cancel()
        self._loops.append(asyncio.create_task(self._expire_leases(), name="qrmid lease expiry"))
        self._loops.append(asyncio.create_task(self.windows.run(), name="qrmid windows"))

    async def stop(self, grace: float, keep: bool = False) -> None:
        """Refuse new tasks and let running ones finish for up to ``grace`` seconds; then cancel the unfinished
        ones, or with ``keep`` (a journal holds them) leave them for the next start; close."""
        self.accepting = False
        if keep:
            await asyncio.gather(*(r.scheduler.suspend(grace) for r in self.resources.values()))
        else:
            reason = "the daemon shut down"
            await asyncio.gather(*(r.scheduler.drain(grace, reason) for r in self.resources.values()))
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await asyncio.gather(*(r.adapter.close() for r in self.resources.values()), return_exceptions=True)

    def resource(self, name: str) -> Resource:
        try:
            return self.resources[name]
        except KeyError:
            known = ", ".join(self.resources) or "none"
            raise NotFound(f"no resource named {name!r} (known: {known})") from None

    async def check_job(self, slurm_job_id: str, uid: int | None, admin: bool) -> str:
        """The Slurm account of job ``slurm_job_id`` once slurmctld confirms a lease of user ``uid`` may be bound
        to it; '' when no job is named or job checks are off."""
        if not slurm_job_id or self.slurm is None:
            return ""
        return (await self.slurm.verify(slurm_job_id, uid, admin)).account

    def acquire(self, name: str, owner: str, slurm_job_id: str = "", ttl: float = 0, account: str = "",
                min_slots: int = 0) -> Lease:
        """A shared lease, keeping ``min_slots`` slots free for its tasks."""
        resource = self._open(name)
        self._check_min_slots(resource, min_slots)
        lease = self.leases.grant(resource.name, owner, slurm_job_id, ttl, limit=resource.max_leases,
                                  account=account, owner_limit=self.policy.max_leases_per_user, min_slots=min_slots)
        self._granted(lease)
        return lease

    async def acquire_exclusive(self, name: str, owner: str, slurm_job_id: str = "", ttl: float = 0,
                                account: str = "", wait: float = 0, within: float | None = None) -> Lease:
        """An exclusive lease, once granted in line: within ``wait`` seconds (the policy's default when 0, its
        maximum at most) and ``within`` seconds (the caller's deadline); DeadlineExceeded naming the place in line
        and what it waits for otherwise."""
        resource = self._open(name)
        self.leases.check_room(name, owner, limit=resource.max_leases, owner_limit=self.policy.max_leases_per_user)

        waiter = Waiter(owner, slurm_job_id)

        async def grant() -> Lease | None:
            lease = self.leases.grant(name, owner, slurm_job_id, ttl, limit=resource.max_leases, account=account,
                                      owner_limit=self.policy.max_leases_per_user, mode=LeaseMode.EXCLUSIVE)
            if self.cluster is not None:
                claimed = False
                try:
                    claimed = await self.cluster.claim_exclusive(lease, waiter.id)
                finally:
                    if not claimed:  # another member granted one first (its lease arrives soon), or the store failed
                        self.leases.pop_id(lease.id)
                if not claimed:
                    return None
            self._granted(lease)
            return lease

        wait = min(wait or self.policy.exclusive_wait, self.policy.max_exclusive_wait,
                   self.policy.max_exclusive_wait if within is None else within)
        if self.cluster is None:
            return await self.lease_gates[name].acquire(waiter, wait, grant)
        await self.cluster.enter_line(name, waiter.id, waiter.asked_at, time.time() + wait)  # every member holds back
        try:
            return await self.lease_gates[name].acquire(waiter, wait, grant)
        finally:
            await asyncio.shield(self.cluster.leave_line(name, waiter.id))

    async def recorded(self, lease: Lease) -> Lease:
        """``lease`` once its grant is recorded for good, so that a restarted daemon still holds it; when it cannot
        be recorded, the lease ends and Unavailable says why."""
        try:
            await self.events.durable()
        except Unavailable:
            if self.leases.find(lease.id) is not None:
                self.leases.pop_id(lease.id)
                self.events.lease_ended(lease, "its grant could not be recorded")
                self._lease_changed(lease.resource)
            raise
        return lease

    def _granted(self, lease: Lease) -> None:
        log.info("%s lease %s granted on %s to %s (slurm job %s, min_slots %d)", lease.mode.value, lease.id,
                 lease.resource, lease.owner, lease.slurm_job_id or "-", lease.min_slots, extra=_lease_context(lease))
        self.events.lease_granted(lease)
        self._lease_changed(lease.resource)

    def _check_min_slots(self, resource: Resource, min_slots: int) -> None:
        """InvalidArgument above the resource's cap; ResourceExhausted when ``min_slots`` more slots kept free would
        leave none to tasks of other leases."""
        if not min_slots:
            return
        cap = resource.min_slots_cap
        if min_slots > cap:
            allowed = f"at most {cap}" if cap else "none: its min_slots_cap is 0"
            raise InvalidArgument(f"min_slots {min_slots} is above what resource {resource.name!r} allows ({allowed}; "
                                  "an admin sets it with min_slots_cap in the resource's config); ask for fewer")
        slots, reserved = resource.scheduler.slots, self.lease_gates[resource.name].reserved()
        if reserved + min_slots > slots - 1:
            left = max(slots - 1 - reserved, 0)
            raise ResourceExhausted(
                f"resource {resource.name!r} has {slots} slot(s) and live leases keep {reserved} free already; "
                f"min_slots {min_slots} more would leave no slot to other tasks (at least one must stay); ask for "
                f"at most {left}, or retry once a lease with min_slots ends")

    def exclusive_state(self, name: str) -> tuple[Lease | None, int]:
        """Resource ``name``'s live exclusive lease, if any, and how many exclusive Acquires wait for it."""
        return self.leases.exclusive(name), (self.lease_gates[name].waiters() if name in self.lease_gates else 0)

    def _lease_changed(self, name: str) -> None:
        """A lease of resource ``name`` began or ended, or one of its tasks left the backend: its gate and exclusive
        line look again."""
        if (gate := self.lease_gates.get(name)) is not None:
            gate.changed()

    async def release(self, token: str, caller: str, admin: bool = False) -> tuple[Lease, int]:
        """End ``caller``'s lease (anyone's for an ``admin``); returns it and how many of its unfinished tasks
        were cancelled, once all that is recorded and shown; Unavailable when it cannot be recorded now."""
        lease = self.leases.pop(token, caller, admin)
        self.events.lease_ended(lease, "released")
        self._lease_changed(lease.resource)
        by = "" if lease.owner == caller else f" by {caller}, an admin"
        cancelled = self._end_lease(lease, f"its lease was released{by}")
        log.info("lease %s on %s released, %d task(s) cancelled", lease.id, lease.resource, len(cancelled),
                 extra=_lease_context(lease))
        await self._settled(cancelled)
        return lease, len(cancelled)

    async def revoke(self, lease_id: str, reason: str = "") -> tuple[Lease, int]:
        """End anyone's lease (admins); returns it and how many of its unfinished tasks were cancelled, once all
        that is recorded and shown; Unavailable when it cannot be recorded now."""
        lease = self.leases.pop_id(lease_id)
        self.events.lease_ended(lease, "revoked")
        self._lease_changed(lease.resource)
        cancelled = self._end_lease(lease, reason or "its lease was revoked by an admin")
        log.info("lease %s on %s of %s revoked, %d task(s) cancelled", lease.id, lease.resource, lease.owner,
                 len(cancelled), extra=_lease_context(lease))
        await self._settled(cancelled)
        return lease, len(cancelled)

    async def _settled(self, cancelled: list[Task]) -> None:
        """Return once a lease's end and the cancellation of its tasks are recorded for good and shown, so that
        a caller told of them never reads a task as still running."""
        await self.events.durable()
        for task in cancelled:
            await task.settled()

    async def drain(self, name: str, reason: str) -> Resource:
        """Stop dispatching to resource ``name`` (an admin's drain, kept across restarts) once it is recorded;
        Unavailable when it cannot be recorded (the drain is in force until the daemon stops)."""
        resource = self.resource(name)
        resource.drain(reason)
        self.events.resource_drained(name, reason)
        await self.events.durable()
        return resource

    async def resume(self, name: str) -> Resource:
        """Undo an admin's drain of resource ``name`` and record it; Unavailable when it cannot be recorded."""
        resource = self.resource(name)
        resource.resume()
        self.events.resource_resumed(name)
        await self.events.durable()
        return resource

    async def start_task(self, name: str, payload: Payload, owner: str, lease_token: str = "",
                         request_id: str = "", priority: str = "", admin: bool = False, eager: bool = False,
                         allow_fallback: bool = False) -> Task:
        """Validate ``payload`` and queue it as a new task (or return the task ``request_id`` made before) in
        priority class ``priority`` ('' for the resource's default; ``admin`` callers may use admin-only ones).
        ``eager`` (RunTask): on a local backend, outside cluster mode, the task may start while its acceptance
        commits (see ``Task.eager``). ``allow_fallback``: a pool may run the task on its fallback member."""
        if not self.accepting:
            raise Unavailable("the daemon is shutting down and takes no new tasks; retry on its restart")
        self.events.writable()  # never accept a task the journal cannot record
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(f"client_request_id is longer than {MAX_REQUEST_ID} characters")
        if request_id and (earlier := self._by_request(owner, request_id)) is not None:
            return await self._recorded(earlier)
        resource = self._open(name)
        lease = None
        if lease_token or self.policy.require_lease:
            if not lease_token:
                raise InvalidArgument(f"resource {name!r} needs a lease: call Acquire and pass its token")
            lease = self.leases.check(lease_token, name, owner)
        if payload.kind not in resource.adapter.payload_kinds:
            kinds = ", ".join(sorted(kind.value for kind in resource.adapter.payload_kinds))
            raise InvalidArgument(f"resource {name!r} takes {kinds} payloads, not {payload.kind.value}")
        if payload.size > self.policy.max_payload_bytes:
            raise InvalidArgument(f"payload is {payload.size} bytes; the limit is {self.policy.max_payload_bytes}")
        priority = resource.scheduler.policy.resolve(priority, admin)
        self._check_room(resource, owner, payload.size)
        accepted = frozenset[str]()  # a pool's members that accept the payload
        try:
            if isinstance(resource, Pool):
                shots, accepted = await resource.scheduler.accepting(payload, owner, allow_fallback)
            else:
                shots = await self.validation.run(owner, resource.adapter.validate(payload), payload.size)
        except InvalidPayload as exc:
            raise InvalidArgument(f"invalid payload for {name!r}: {exc}") from None
        except Busy as exc:  # the backend cannot check payloads yet (its description is not read)
            raise Unavailable(f"resource {name!r} cannot check the payload now: {exc}") from None
        resource.scheduler.policy.check_shots(name, shots)
        if request_id and (earlier := self._by_request(owner, request_id)) is not None:
            return await self._recorded(earlier)
        warnings = self.allocations.admit((lease.account if lease else "") or owner, name, shots)
        if warnings:  # over a soft allocation: the lowest class
            priority = resource.scheduler.policy.classes[-1].name
        task = Task(resource=name, owner=owner, payload=payload, shots=shots,
                    lease_id=lease.id if lease else "", slurm_job_id=lease.slurm_job_id if lease else "",
                    client_request_id=request_id, events=self.events, priority=priority,
                    account=lease.account if lease else "", warnings=warnings, allow_fallback=allow_fallback)
        self._check_room(resource, owner, task.size)  # again: others may have queued while it was validated
        task.eager = eager and not resource.adapter.remote and self.cluster is None
        if isinstance(resource, Pool):
            resource.scheduler.accepted(task, accepted)
        resource.scheduler.enqueue(task)
        self.events.task_queued(task)
        self._tasks[task.id] = task
        if request_id:
            self._requests[(owner, request_id)] = task.id
        accepting = asyncio.create_task(self._accept(task))  # runs on when the caller gives up waiting
        self._accepting.add(accepting)
        accepting.add_done_callback(self._accepting.discard)
        if (refused := await asyncio.shield(accepting)) is not None:
            if request_id and self.cluster is not None:  # another member may have taken the request id meanwhile
                with contextlib.suppress(Unavailable):
                    found = await self.cluster.fetch_request(owner, request_id)
                    if found is not None and found != task.id and found in self._tasks:
                        return await self._recorded(self._tasks[found])
            raise refused
        if self.payloads is not None and task.size > self.payloads.threshold:
            await asyncio.shield(self._store(task))  # stored even when the caller gives up waiting
        return task

    async def _accept(self, task: Task) -> Unavailable | None:
        """Wait until ``task``'s record is durable: accepted only once a restarted daemon would find it. When it
        cannot be, take the task back and return why."""
        try:
            await self.events.recorded(task)
        except Unavailable as exc:
            self._refuse(task)
            return exc
        return None

    async def _recorded(self, task: Task) -> Task:
        """``task``, made by an earlier call with the same request id, once it is durable as that call's answer
        will be; Unavailable as that call when it cannot be."""
        await self.events.recorded(task)
        return task

    def _refuse(self, task: Task) -> None:
        """Take back a task whose record could not be made durable: it leaves its queue, is forgotten (a retry
        of its request id makes a new one) and its record, should it still land, is deleted."""
        self.resources[task.resource].scheduler.stop(task, "the journal could not record it")
        self._tasks.pop(task.id, None)
        self._finished.pop(task.id, None)
        if self._requests.get((task.owner, task.client_request_id)) == task.id:
            del self._requests[(task.owner, task.client_request_id)]
        self.events.task_refused(task)

    def _check_room(self, resource: Resource, owner: str, size: int) -> None:
        """ResourceExhausted when ``resource``'s queue, or ``owner``, has no room for a task of ``size`` payload
        bytes: a limit on queued tasks, or on queued payload bytes (``owner``'s on all resources together)."""
        resource.scheduler.check_room(owner)
        limit = self.policy.max_queued_bytes_per_resource
        queued = resource.scheduler.queued_bytes
        if limit and queued + size > limit:
            raise ResourceExhausted(
                f"resource {resource.name!r} has {_size(queued)} of payloads queued; this task's {_size(size)} would "
                f"pass its limit of {_size(limit)} ([tasks] max_queued_bytes_per_resource); retry once queued tasks "
                "have started")
        limit = self.policy.max_queued_bytes_per_user
        queued = sum(other.scheduler.bytes_queued_by(owner) for other in self.resources.values())
        if limit and queued + size > limit:
            raise ResourceExhausted(
                f"you have {_size(queued)} of payloads queued; this task's {_size(size)} would pass the per-user limit "
                f"of {_size(limit)} ([tasks] max_queued_bytes_per_user); wait for some of your tasks to start, or "
                "cancel some")

    async def store_queued(self) -> None:
        """Move the large payloads of queued tasks (those taken back from the journal at start) out of memory."""
        for task in [task for task in self._tasks.values() if task.state is TaskState.QUEUED and task.stored is None]:
            await self._store(task)

    async def _store(self, task: Task) -> None:
        """Move a large queued payload out of memory until dispatch, while its task is still queued."""
        if self.payloads is None:
            return
        stored = await self.payloads.put(task.payload)
        if stored is None:
            return
        if self.resources[task.resource].scheduler.holds(task):  # not taken for submission meanwhile
            task.store(stored)
        else:
            stored.discard()

    async def restore(self, tasks: Iterable[Task], leases: Iterable[Lease], held: set[str],
                      submitting: set[str], drains: Mapping[str, str] | None = None) -> None:
        """Take back what an earlier run journaled, after ``start`` and before serving: admins' drains, leases,
        finished tasks (status, result, logs), queued tasks in their order, and tasks on a backend, re-attached to
        their jobs (or run again where their run died with the daemon). ``held``: finished tasks whose job may
        still hold room on its backend; ``submitting``: queued tasks that were being handed to their backend;
        ``drains``: the reason of each resource an admin drained."""
        for name, reason in (drains or {}).items():
            if name in self.resources:
                self.resources[name].drain(reason)
                log.info("resource %s stays drained across the restart: %s", name, reason)
            else:
                log.warning("resource %s was drained but is no longer configured; its drain is kept for it", name)
        for lease in leases:
            self.leases.restore(lease)
        for task in tasks:
            task.events = self.events
            self._tasks[task.id] = task
            if task.client_request_id:
                self._requests[(task.owner, task.client_request_id)] = task.id
            resource = self.resources.get(task.resource)
            if task.state.terminal:
                if resource is not None:
                    resource.scheduler.restore_usage(task)
                runner = _runner(resource, task)
                if runner is not None and runner.adapter.remote and runner.scheduler.leading and \
                        task.id in held and task.remote_ref:
                    self._loops.append(asyncio.create_task(self._release(runner, task, task.remote_ref)))
                self._finish(task)
                continue
            if resource is not None and not resource.scheduler.leading:  # another member may dispatch it
                resource.scheduler.adopt(task, None) if task.state is TaskState.QUEUED else \
                    resource.scheduler.mirrored(task)
                continue
            try:
                if resource is None:
                    raise RuntimeError(f"resource {task.resource!r} is no longer configured")
                ref = await _reattach(runs_on(resource, task), task, submitting)
            except Exception as exc:  # its fate is unknown: fail it rather than run it twice
                task.transition(TaskState.FAILED, f"lost across a restart of the daemon: {exc}")
                self._finish(task)
                continue
            if ref is None:
                task.remote_ref = None
                del task.history[1:]  # it never ran, or its run died with the daemon: it is queued again
            resource.scheduler.adopt(task, ref)
        log.info("restored %d task(s) and %d lease(s) from the journal", len(self._tasks), len(self.leases.live()))

    def _bind(self, resource: Resource) -> None:
        resource.scheduler.on_done = self._finish
        self.lease_gates[resource.name] = gate = LeaseGate(resource.name, resource.scheduler, self.leases)
        resource.scheduler.gates.append(gate)
        self.windows.attach(resource)
        resource.on_checked = self._checked
        self.bind(resource.adapter)
        if isinstance(resource, Pool):
            resource.scheduler.check = self._check_payload

    async def _check_payload(self, owner: str, adapter: Adapter, payload: Payload) -> int:
        """``payload``'s shots once ``adapter`` found it valid (in a validation worker when it must be read)."""
        return await self.validation.run(owner, adapter.validate(payload), payload.size)

    def _checked(self, resource: Resource, target: str) -> None:
        self.events.resource_checked(resource.name, resource.backend, resource.scheduler.slots, target)

    def bind(self, adapter: Adapter) -> None:
        """Have ``adapter`` journal the references of its jobs through this broker."""
        adapter.record_refs = self._record_refs  # type: ignore[method-assign]

    async def _record_refs(self, refs: dict[str, str]) -> None:
        """Journal the references an adapter learned of its jobs after submitting them; return once durable."""
        for task_id, ref in refs.items():
            task = self._tasks.get(task_id)
            if task is not None and not task.state.terminal:
                task.remote_ref = ref
                self.events.task_ref(task)
        await self.events.durable()

    async def _release(self, resource: Resource, task: Task, ref: str) -> None:
        """Free the backend job of a task that finished just before a restart."""
        try:
            await resource.adapter.cleanup(ref)
        except Exception as exc:  # best effort, as the scheduler's own cleanup
            log.warning("cleanup of task %s on %s after a restart failed: %s", task.id, resource.name, exc,
                        extra=log_context(task))
            return
        self.events.job_released(task)

    def task(self, task_id: str) -> Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise NotFound(f"no task with id {task_id!r} (unknown, or its record has expired)") from None

    async def task_for(self, task_id: str, owner: str, admin: bool = False) -> Task:
        """Task ``task_id`` when ``owner`` may see and stop it: it is theirs, or they are an admin. In cluster mode a
        task this member has not heard of yet is read from the store (it may have been taken by another member an
        instant ago)."""
        if task_id not in self._tasks and self.cluster is not None:
            await self.cluster.fetch(task_id)
        task = self.task(task_id)
        if task.owner != owner and not admin:
            raise PermissionDenied(f"task {task_id} belongs to another user")
        return task

    def stop_task(self, task_id: str, reason: str = "stopped by its owner") -> Task:
        """Cancel task ``task_id``; in cluster mode, on a member that does not dispatch its resource, ask the one
        that does (``cancel`` waits for the outcome)."""
        task = self.task(task_id)
        if not task.state.terminal:  # a finished task's resource may have left the config since
            self._stop(task, reason)
        return task

    async def cancel(self, task_id: str, reason: str) -> tuple[Task, TaskView]:
        """Cancel task ``task_id`` and return it with the state callers may be shown: its end once recorded, or,
        when another member dispatches it, its state once that member cancelled it (at most ``CANCEL_WAIT``
        seconds: the request stays in the store for its dispatcher meanwhile)."""
        task = self.stop_task(task_id, reason)
        if task.state.terminal or self.resources[task.resource].scheduler.leading:
            return task, await task.settled()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_WAIT):
                await task.wait()
        return task, task.shown

    def _stop(self, task: Task, reason: str) -> None:
        scheduler = self.resources[task.resource].scheduler
        if scheduler.leading:
            scheduler.stop(task, reason)
        else:
            self.events.cancel_requested(task, reason)

    # -- cluster mode: what other members recorded, and the dispatch of a resource moving between members ----

    def mirror(self, stored: Task) -> None:
        """Take task ``stored`` as another member recorded it: a new task joins its resource's queue (the
        dispatcher's, or a standby's), a known one of a resource this member does not dispatch takes its new
        states. This member's own record of the tasks it dispatches is never older than the store's."""
        task = self._tasks.get(stored.id)
        resource = self.resources.get(stored.resource)
        if task is None:
            stored.events = self.events
            self._tasks[stored.id] = stored
            if stored.client_request_id:
                self._requests[(stored.owner, stored.client_request_id)] = stored.id
            if stored.state.terminal or resource is None:
                if resource is not None:
                    resource.scheduler.restore_usage(stored)
                self._finish(stored)
            elif stored.state is TaskState.QUEUED:
                resource.scheduler.adopt(stored, None)
                self.allocations.task_mirrored(stored)  # another member took it: it counts against allocations
            else:
                resource.scheduler.mirrored(stored)
            if stored.state is not TaskState.QUEUED:
                self.events.task_mirrored(stored)
            return
        if resource is not None and resource.scheduler.leading:
            return
        if not task.state.terminal:
            task.remote_ref = stored.remote_ref  # a standby attaches by the latest reference
        if task.mirror(stored):
            if resource is not None:
                resource.scheduler.mirrored(task)
            elif task.state.terminal:
                self._finish(task)
            self.events.task_mirrored(task)

    async def lead(self, name: str, stored: list[Task], submitting: set[str], held: set[str]) -> None:
        """Start dispatching resource ``name`` (this member was elected): catch up with its unfinished tasks as
        the store holds them (``stored``), then re-attach every task another member left on the backend, exactly as
        a restart does (``submitting``: tasks that were being handed to it; ``held``: finished tasks whose job may
        still hold room there)."""
        resource = self.resources[name]
        scheduler = resource.scheduler
        for task in stored:
            self.mirror(task)
            if (own := self._tasks.get(task.id)) is not None and own.stored is None and not own.state.terminal:
                own.payload = task.payload  # a copy that ended here but whose end the store refused lost it
        unsure = [self._tasks[task_id] for task_id in submitting if task_id in self._tasks]
        attached: dict[Task, str | None] = {}
        tried: set[Task] = set()
        # until none is left: while one is re-attached, this member's own follow of a task from its deposed dispatch
        # may end and leave that task on the backend for the dispatcher, which is this member now
        while pending := [task for task in [*scheduler.elsewhere, *(task for task in unsure if task.state is
                                                                     TaskState.QUEUED)] if task not in tried]:
            tried.update(pending)
            for task in pending:
                try:
                    ref = await _reattach(runs_on(resource, task), task, submitting)  # a pool's: on its member
                except Exception as exc:  # its fate is unknown: fail it rather than run it twice
                    task.transition(TaskState.FAILED, f"lost in a change of dispatcher: {exc}")
                    scheduler.mirrored(task)
                    continue
                attached[task] = ref
        scheduler.lead(attached)
        for done in filter(None, map(self._tasks.get, held)):
            runner = _runner(resource, done)
            if done.remote_ref and runner is not None and runner.adapter.remote:
                self._loops.append(asyncio.create_task(self._release(runner, done, done.remote_ref)))
        log.info("dispatching %s: %d task(s) re-attached on the backend, %d queued again, %d queued", name,
                 sum(ref is not None for ref in attached.values()), sum(ref is None for ref in attached.values()),
                 scheduler.queued)

    def step_down(self, name: str, fenced: Iterable[str] = ()) -> None:
        """Stop dispatching resource ``name`` (another member was elected, or this one lost its hold); the states of
        ``fenced`` tasks, which the store refused, are taken back."""
        resource = self.resources.get(name)
        if resource is None:
            return
        if resource.scheduler.leading:
            log.warning("no longer dispatching %s (another member may take it over)", name)
        resource.scheduler.step_down()
        self.take_back(list(fenced))

    def take_back(self, task_ids: list[str]) -> None:
        """Drop the states of tasks ``task_ids`` that the store refused to record: no caller has seen them, and the
        resource's dispatcher decides them again."""
        for task_id in task_ids:
            if (task := self._tasks.get(task_id)) is not None:
                task.rewind()

    async def hand_over(self, name: str) -> None:
        """Stop dispatching resource ``name`` and return once no submission to its backend is in flight, so that the
        member taking it over finds every job its tasks have."""
        self.step_down(name)
        await self.settle(name)

    async def settle(self, name: str) -> None:
        """Return once no submission to resource ``name``'s backend is in flight."""
        if name in self.resources:
            await self.resources[name].scheduler.submitted()

    async def mirror_state(self, name: str, status: BackendStatus, slots: int, target: str) -> None:
        """Take the status, slots and target resource ``name``'s dispatcher published, when this member holds no
        credentials for it."""
        resource = self.resources.get(name)
        if resource is None or resource.dispatch:
            return
        try:
            await resource.adopt(status, slots, target)
        except ValueError as exc:
            log.error("resource %s: the target its dispatcher published cannot be used: %s", name, exc)

    def lease_ids(self) -> set[str]:
        return {lease.id for lease in self.leases.live()}

    def resource_names(self) -> list[str]:
        return list(self.resources)

    def cancel_requested(self, task_id: str, reason: str) -> bool:
        """Cancel task ``task_id`` as another member asked, when this member dispatches it; whether it did."""
        task = self._tasks.get(task_id)
        if task is None or not self.resources.get(task.resource) or not self.resources[task.resource].scheduler.leading:
            return False
        if not task.state.terminal:
            self.resources[task.resource].scheduler.stop(task, reason)
        return True

    def mirror_lease(self, lease_id: str, stored: Lease | None) -> None:
        """Take lease ``lease_id`` as the store holds it (None: it ended on another member)."""
        known = self.leases.find(lease_id)
        if stored is not None and known is None:
            self.leases.restore(stored)
            self._lease_changed(stored.resource)
        elif stored is None and known is not None:
            lease = self.leases.pop_id(lease_id)
            self._end_lease(lease, "its lease ended", here=True)
            self._lease_changed(lease.resource)

    def mirror_waits(self, name: str, waits: list[tuple[str, float, float]]) -> None:
        """Take the exclusive Acquires waiting for resource ``name`` on every member as the store holds them."""
        if (gate := self.lease_gates.get(name)) is not None:
            gate.mirror(waits)

    def mirror_drain(self, name: str, reason: str | None) -> None:
        """Take resource ``name``'s drain as the store holds it (None: resumed) from another member."""
        resource = self.resources.get(name)
        if resource is None:
            return
        if reason is None:
            if resource.draining:
                resource.resume()
        elif not resource.draining or resource.drain_reason != reason:
            resource.drain(reason)

    def unfinished(self, name: str) -> list[Task]:
        """Resource ``name``'s unfinished tasks: running ones by start, then queued ones in dispatch order."""
        scheduler = self.resource(name).scheduler
        mine = [task for task in self._tasks.values() if task.resource == name and not task.state.terminal]
        positions = {task: scheduler.position(task) for task in mine}
        return sorted(mine, key=lambda task: (positions[task], task.view.started_at or task.view.created_at))

    def tasks(self, owner: str | None, resource: str = "", states: frozenset[TaskState] = frozenset(),
              limit: int = 0, after: tuple[float, str] | None = None, page_size: int = 0) -> tuple[list[Task], bool]:
        """A page of the tasks kept (unfinished ones and the last finished ones) of ``owner`` (None: every user's),
        only ``resource``'s and in ``states`` when given, oldest first: the ``limit`` most recent when not 0, from
        the one after ``after`` (a task's ``listing_key``), at most ``page_size`` (the policy's when 0 or more);
        with whether more follow."""
        if resource and resource not in self.resources and all(t.resource != resource for t in self._tasks.values()):
            self.resource(resource)  # NotFound naming the resources served
        found = sorted((task for task in self._tasks.values() if (owner is None or task.owner == owner)
                        and (not resource or task.resource == resource)
                        and (not states or task.shown.state in states)), key=listing_key)
        if limit:
            found = found[-limit:]
        if after is not None:
            found = found[bisect.bisect_right(found, after, key=listing_key):]
        size = min(page_size or self.policy.list_page_size, self.policy.list_page_size)
        return found[:size], len(found) > size

    async def add_resource(self, resource: Resource) -> None:
        """Start serving a resource added to the config while the daemon runs."""
        await resource.adapter.start()
        self._bind(resource)
        self.resources[resource.name] = resource
        self._loops.append(asyncio.create_task(resource.run(), name=f"qrmid resource {resource.name}"))

    def retire(self, name: str) -> None:
        """Take a resource removed from the config out of service: it takes no new tasks or leases, runs the
        ones it has, then leaves (its leases end)."""
        resource = self.resource(name)
        resource.retiring = True
        resource.drain_reason = "removed from the config: it runs the tasks it has, then leaves"
        self._loops.append(asyncio.create_task(self._leave(resource), name=f"qrmid retire {name}"))

    async def _leave(self, resource: Resource) -> None:
        while resource.scheduler.queued or resource.scheduler.running:
            await asyncio.sleep(resource.scheduler.poll_interval)
        del self.resources[resource.name]
        self.lease_gates.pop(resource.name, None)
        for loop in [loop for loop in self._loops if loop.get_name() == f"qrmid resource {resource.name}"]:
            loop.cancel()
            self._loops.remove(loop)
        for lease in [lease for lease in self.leases.live() if lease.resource == resource.name]:
            self.leases.pop_id(lease.id)
            self.events.lease_ended(lease, "resource removed")
        await resource.adapter.close()
        log.info("resource %s left: it was removed from the config and its tasks have ended", resource.name)

    def _open(self, name: str) -> Resource:
        """Resource ``name`` when it takes new tasks and leases."""
        resource = self.resource(name)
        if resource.retiring:
            raise FailedPrecondition(f"resource {name!r} was removed from the config and takes nothing new")
        return resource

    def queue_position(self, task: Task) -> int:
        return self.resources[task.resource].scheduler.position(task)

    def _by_request(self, owner: str, request_id: str) -> Task | None:
        task_id = self._requests.get((owner, request_id))
        return self._tasks.get(task_id) if task_id else None

    def _end_lease(self, lease: Lease, reason: str, here: bool = False) -> list[Task]:
        """Cancel the unfinished tasks of an ended lease (when the policy says so); returns them. ``here``: only those
        this member dispatches (the member that ended the lease asked for the others)."""
        if not self.policy.cancel_on_release:
            return []
        doomed = [t for t in self._tasks.values() if t.lease_id == lease.id and not t.state.terminal]
        for task in doomed:
            if not here or self.resources[task.resource].scheduler.leading:
                self._stop(task, reason)
        return doomed

    def _finish(self, task: Task) -> None:
        """Keep the records of the last ``retain_tasks`` finished tasks."""
        self._lease_changed(task.resource)  # its slot is free: an exclusive Acquire may be granted
        if task.id not in self._tasks:  # refused: it was never taken
            return
        self._finished[task.id] = None
        while len(self._finished) > self.policy.retain_tasks:
            old_id, _ = self._finished.popitem(last=False)
            old = self._tasks.pop(old_id)
            self._requests.pop((old.owner, old.client_request_id), None)

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(self.policy.lease_check_interval)
            for lease in self.leases.pop_expired():
                self.events.lease_ended(lease, "expired")
                self._lease_changed(lease.resource)
                cancelled = self._end_lease(lease, "its lease expired")
                log.info("lease %s on %s expired, %d task(s) cancelled", lease.id, lease.resource, len(cancelled),
                         extra=_lease_context(lease))


async def _reattach(resource: Resource, task: Task, submitting: set[str]) -> str | None:
    """The reference to follow ``task``'s job by after a restart or a change of dispatcher, as the backend confirms
    it; None when the task is to run (again). Raises when the job's fate cannot be known."""
    ref = task.remote_ref if task.state is TaskState.RUNNING else None
    if ref is not None or task.id in submitting:
        return await resource.adapter.attach(task.id, ref)
    return None


def _runner(resource: Resource | None, task: Task) -> Resource | None:
    """The resource whose backend ran ``task`` of ``resource`` (a pool's member), None when it is not configured."""
    try:
        return None if resource is None else runs_on(resource, task)
    except RuntimeError:
        return None


def listing_key(task: Task) -> tuple[float, str]:
    """Where ``task`` sorts in a listing of tasks: by creation, then id."""
    return task.history[0].created_at, task.id


def _size(size: int) -> str:
    """``size`` bytes for a person: in MiB, KiB or bytes."""
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} bytes"


def _lease_context(lease: Lease) -> dict[str, str]:
    """A lease's ids as ``extra`` for a log record."""
    return {"lease_id": lease.id, "resource": lease.resource, "slurm_job_id": lease.slurm_job_id}
