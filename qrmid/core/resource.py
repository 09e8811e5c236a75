"""A resource: a named backend adapter with its scheduler, its admin state and its cached backend status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from qrmid.backends import retry
from qrmid.backends.base import Adapter, BackendState, BackendStatus, CredentialsRefused
from qrmid.backends.payloads import PayloadKind
from qrmid.core.errors import FailedPrecondition, Unavailable
from qrmid.core.scheduler import Scheduler

log = logging.getLogger(__name__)


class ResourceStatus(Enum):
    """What callers see of a resource's state."""

    ONLINE = "online"
    OFFLINE = "offline"
    PAUSED = "paused"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class ResourceView:
    """A snapshot of a resource for callers."""

    name: str
    type: str
    status: ResourceStatus
    status_reason: str
    slots_total: int
    slots_free: int
    queue_length: int
    running_tasks: int
    payload_kinds: frozenset[PayloadKind]
    members: tuple[str, ...] = ()  # a pool's member resources, in its order
    pool_policy: str = ""  # a pool's policy: least-busy or ordered
    fallback: str = ""  # a pool's fallback member; empty when none


class Resource:
    """One quantum resource served by the daemon."""

    def __init__(self, name: str, type: str, adapter: Adapter, scheduler: Scheduler, *,
                 status_interval: float, max_leases: int = 0) -> None:
        self.name = name
        self.type = type
        self.adapter = adapter
        self.scheduler = scheduler
        self.status_interval = status_interval
        self.max_leases = max_leases
        self.min_slots_cap = 0  # the most slots one lease may keep free for its tasks (min_slots)
        self.draining = False  # no dispatching, by an admin or while a reload swaps its adapter
        self.retiring = False  # removed from the config: no new tasks or leases, leaves once empty
        self.drain_reason = ""
        self.backend = BackendStatus(BackendState.OFFLINE, "not checked yet")
        self.checked = asyncio.Event()
        self.dispatch = True  # cluster mode: false when this member holds no credentials for it (never dispatches)
        self.published_target = ""  # cluster mode: the target its dispatcher published, on members without credentials
        self.on_checked: Callable[[Resource, str], None] = lambda resource, target: None  # publishes status, target
        self.failing = False  # its status checks fail: warned of once, until one succeeds
        self._checking = False  # a status check is in progress

    def view(self) -> ResourceView:
        if self.draining or self.retiring:
            status = ResourceStatus.DRAINING
            reason = self.drain_reason or "drained by an admin: running tasks finish, no new ones start"
        else:
            status, reason = ResourceStatus(self.backend.state.value), self.backend.reason
        slots = self.scheduler.slots
        running = self.scheduler.running
        free = max(slots - running, 0) if status is ResourceStatus.ONLINE else 0  # none takes a task now
        return ResourceView(self.name, self.type, status, reason, slots, free, self.scheduler.queued, running,
                            self.adapter.payload_kinds)

    async def target(self) -> str:
        """The backend's device description; a backend that cannot give it is UNAVAILABLE, one whose service refuses
        the daemon's credentials a FAILED_PRECONDITION, each with the backend's own account of it. A cluster member
        without the resource's credentials answers what its dispatcher published."""
        if not self.dispatch:
            if not self.published_target:
                raise Unavailable(f"resource {self.name!r} cannot give its target yet: no member that dispatches it "
                                  "has published it; retry once one has checked the backend")
            return self.published_target
        try:
            return await self.adapter.target()
        except CredentialsRefused as exc:
            raise FailedPrecondition(f"resource {self.name!r} cannot give its target: {exc}; an admin must fix the "
                                     f"resource's credentials in the daemon's config") from None
        except Exception as exc:  # an unreachable or failing service
            raise Unavailable(f"resource {self.name!r} cannot give its target now: {exc}; retry later") from None

    def drain(self, reason: str) -> None:
        """Stop dispatching: running tasks finish, queued ones wait; ``reason`` is shown as the status reason."""
        self.draining, self.drain_reason = True, reason
        self.scheduler.dispatching = False

    def resume(self) -> None:
        """Dispatch again (once the backend is online)."""
        self.draining = False
        if not self.retiring:
            self.drain_reason = ""
        self.scheduler.dispatching = self.backend.state is BackendState.ONLINE
        self.scheduler.wake()

    async def refresh(self) -> None:
        """Ask the backend for its status and let the scheduler dispatch only while it is online; the dispatcher of a
        cluster's resource publishes what it found, with the target, for the members without credentials. A backend
        not known online shows its first failed attempt at once, while the check retries."""
        listening = retry.failed_attempt.set(self._attempt_failed)
        self._checking = True
        try:
            self.backend = await self.adapter.status()
        except Exception as exc:  # an unreachable backend is offline, not a crash
            self.backend = BackendStatus(BackendState.OFFLINE, f"status check failed: {_at(str(exc), exc)}")
            self._warn(self.backend.reason)
        else:
            if self.failing:
                log.info("resource %s: its backend answers again (%s)", self.name, self.backend.state.value)
            self.failing = False
        finally:
            self._checking = False
            retry.failed_attempt.reset(listening)
        self._checked()
        if self.scheduler.leading:
            try:
                target = await self.adapter.target()
            except Exception:  # the status says why; published without a target until it can be read
                target = ""
            self.on_checked(self, target)

    def _attempt_failed(self, what: str, error: BaseException) -> None:
        """An attempt of the status check failed and will be retried: a resource not known online shows it now
        (rather than "not checked yet" until the retries run out), and the first failure is logged."""
        if not self._checking:  # a task the check started, failing after it ended
            return
        reason = f"status check failing, retrying: {_at(what, error)}: {str(error) or type(error).__name__}"
        self._warn(reason)
        if self.backend.state is not BackendState.ONLINE:
            self.backend = BackendStatus(BackendState.OFFLINE, reason)
            self._checked()
            if self.scheduler.leading:
                self.on_checked(self, "")  # the target published already stays

    def _warn(self, reason: str) -> None:
        """Log the first failure of the backend's status checks, once until one succeeds."""
        if not self.failing:
            log.warning("resource %s: %s; checked again in the background until it answers", self.name, reason)
        self.failing = True

    async def adopt(self, status: BackendStatus, slots: int, target: str) -> None:
        """Take the status, slots and target the resource's dispatcher published (a member without credentials):
        payloads are checked against that target from now on. ValueError when the target cannot be read."""
        self.backend = status
        self.scheduler.published_slots = slots
        if target and target != self.published_target:
            await self.adapter.adopt_target(target)
            self.published_target = target
        self._checked()

    def _checked(self) -> None:
        self.scheduler.dispatching = self.backend.state is BackendState.ONLINE and not self.draining
        self.scheduler.wake()
        self.checked.set()

    async def run(self) -> None:
        """Dispatch tasks and refresh the backend status every ``status_interval`` seconds, forever (a member without
        the resource's credentials only keeps its standby queue: its dispatcher publishes the status)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.scheduler.run())
            while self.dispatch:
                await self.refresh()
                await asyncio.sleep(self.status_interval)


def _at(text: str, error: BaseException) -> str:
    """``text`` naming the endpoint that failed, when ``error`` says which."""
    endpoint = retry.endpoint_of(error)
    return f"{text} (at {endpoint})" if endpoint and endpoint not in text else text
