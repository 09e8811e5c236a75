"""The broker: the registry of resources, the task index and the lease table, behind every QRMI operation."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from qrmid.backends.base import InvalidPayload
from qrmid.core.errors import InvalidArgument, NotFound, Unavailable
from qrmid.core.events import Events
from qrmid.core.leases import Lease, LeaseTable
from qrmid.backends.payloads import Payload
from qrmid.core.resource import Resource
from qrmid.core.tasks import Task

log = logging.getLogger(__name__)

MAX_REQUEST_ID = 128
FIRST_CHECK_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Policy:
    """Daemon-wide rules for tasks and leases."""

    max_payload_bytes: int = 8 << 20
    require_lease: bool = False
    cancel_on_release: bool = True
    retain_tasks: int = 10_000
    lease_check_interval: float = 5.0


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
        for resource in self.resources.values():
            resource.scheduler.on_done = self._finish

    async def start(self) -> None:
        """Start every adapter and dispatching. Each backend's first status check gets a few seconds; one
        that is unreachable stays OFFLINE and is checked again on its interval, never holding up the rest."""
        await asyncio.gather(*(resource.adapter.start() for resource in self.resources.values()))
        self._loops = [asyncio.create_task(resource.run(), name=f"qrmid resource {name}")
                       for name, resource in self.resources.items()]
        checks = [asyncio.create_task(resource.checked.wait()) for resource in self.resources.values()]
        _, late = await asyncio.wait(checks, timeout=FIRST_CHECK_SECONDS)
        for check in late:
            check.cancel()
        self._loops.append(asyncio.create_task(self._expire_leases(), name="qrmid lease expiry"))

    async def stop(self, grace: float) -> None:
        """Refuse new tasks, let running ones finish for up to ``grace`` seconds, cancel the rest, close."""
        self.accepting = False
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

    def acquire(self, name: str, owner: str, slurm_job_id: str = "", ttl: float = 0) -> Lease:
        resource = self.resource(name)
        lease = self.leases.grant(resource.name, owner, slurm_job_id, ttl, limit=resource.max_leases)
        log.info("lease %s granted on %s to %s (slurm job %s)", lease.id, name, owner, slurm_job_id or "-")
        self.events.lease_granted(lease)
        return lease

    def release(self, token: str, owner: str) -> tuple[Lease, int]:
        """End a lease; returns it and how many of its unfinished tasks were cancelled."""
        lease = self.leases.pop(token, owner)
        self.events.lease_ended(lease, "released")
        cancelled = self._end_lease(lease, "its lease was released")
        log.info("lease %s on %s released, %d task(s) cancelled", lease.id, lease.resource, cancelled)
        return lease, cancelled

    async def start_task(self, name: str, payload: Payload, owner: str, lease_token: str = "",
                         request_id: str = "") -> Task:
        """Validate ``payload`` and queue it as a new task (or return the task ``request_id`` made before)."""
        if not self.accepting:
            raise Unavailable("the daemon is shutting down and takes no new tasks; retry on its restart")
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(f"client_request_id is longer than {MAX_REQUEST_ID} characters")
        if request_id and (earlier := self._by_request(owner, request_id)) is not None:
            return earlier
        resource = self.resource(name)
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
        resource.scheduler.check_room()
        try:
            shots = await asyncio.to_thread(resource.adapter.validate, payload)
        except InvalidPayload as exc:
            raise InvalidArgument(f"invalid payload for {name!r}: {exc}") from None
        if request_id and (earlier := self._by_request(owner, request_id)) is not None:
            return earlier
        task = Task(resource=name, owner=owner, payload=payload, shots=shots,
                    lease_id=lease.id if lease else "", slurm_job_id=lease.slurm_job_id if lease else "",
                    client_request_id=request_id, events=self.events)
        resource.scheduler.enqueue(task)
        self.events.task_queued(task)
        self._tasks[task.id] = task
        if request_id:
            self._requests[(owner, request_id)] = task.id
        return task

    def task(self, task_id: str) -> Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise NotFound(f"no task with id {task_id!r} (unknown, or its record has expired)") from None

    def stop_task(self, task_id: str, reason: str = "stopped by its owner") -> Task:
        task = self.task(task_id)
        self.resources[task.resource].scheduler.stop(task, reason)
        return task

    def queue_position(self, task: Task) -> int:
        return self.resources[task.resource].scheduler.position(task)

    def _by_request(self, owner: str, request_id: str) -> Task | None:
        task_id = self._requests.get((owner, request_id))
        return self._tasks.get(task_id) if task_id else None

    def _end_lease(self, lease: Lease, reason: str) -> int:
        if not self.policy.cancel_on_release:
            return 0
        doomed = [t for t in self._tasks.values() if t.lease_id == lease.id and not t.state.terminal]
        for task in doomed:
            self.resources[task.resource].scheduler.stop(task, reason)
        return len(doomed)

    def _finish(self, task: Task) -> None:
        """Keep the records of the last ``retain_tasks`` finished tasks."""
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
                cancelled = self._end_lease(lease, "its lease expired")
                log.info("lease %s on %s expired, %d task(s) cancelled", lease.id, lease.resource, cancelled)
