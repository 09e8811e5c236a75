"""Applying a re-read config's resources to a running broker without dropping a queued or running task.

- A new resource is built and started.
- A removed resource takes no new tasks or leases, runs the ones it has, then leaves.
- A changed resource keeps its queue. Queue and polling limits apply at once. Any other change (the
  backend's own settings: URL, credentials, slots, ...) needs a new adapter: the resource stops dispatching,
  its running tasks finish on the old adapter, then the new one takes over the queue.
- Scheduling keys (priority class, per-owner limits) are read when a resource is built: they need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qrmid.backends.base import Adapter
from qrmid.backends.registry import ResourceConfig
from qrmid.backends.settings import ResourceSettings
from qrmid.core.broker import Broker
from qrmid.core.errors import InvalidArgument
from qrmid.core.resource import Resource

log = logging.getLogger(__name__)

IN_PLACE = frozenset({"queue_limit", "poll_interval", "busy_deadline_seconds", "status_interval", "max_leases",
                      "min_slots_cap",
                      "slurm_gate", "slurm_license"})  # the daemon's Slurm gate reads the last two on reload
AT_RESTART = frozenset({"default_class", "max_queued_per_owner", "max_running_per_owner", "max_shots_per_task"})


@dataclass(frozen=True, slots=True)
class Changes:
    """What a reload did to the resources, by name."""

    added: list[str]
    removed: list[str]
    changed: list[str]


class Reloader:
    """Applies new resource settings to one broker; remembers the adapter swaps still waiting for idle."""

    def __init__(self, broker: Broker, build: Callable[[ResourceConfig], Resource]) -> None:
        self.broker = broker
        self.build = build
        self._swaps: dict[str, asyncio.Task[None]] = {}

    async def apply(self, old: Sequence[ResourceConfig], new: Sequence[ResourceConfig]) -> Changes:
        """Bring the broker from ``old`` to ``new``; InvalidArgument, with nothing changed, when it cannot."""
        before = {settings.name: settings for settings in old}
        after = {settings.name: settings for settings in new}
        for name in after.keys() - before.keys():
            if name in self.broker.resources:
                raise InvalidArgument(f"resource {name!r} is still leaving after an earlier reload; reload again "
                                      "once its tasks have ended")
        changed = [name for name in after if name in before and after[name] != before[name]]
        try:
            added = {name: self.build(after[name]) for name in after if name not in before}
            adapters = {name: self.build(after[name]).adapter for name in changed
                        if _fields(before[name], after[name]) - IN_PLACE - AT_RESTART}
        except Exception as exc:  # an adapter that cannot be built from its settings
            raise InvalidArgument(f"cannot build a resource from the new config: {exc}") from None
        for resource in added.values():
            await self.broker.add_resource(resource)
        removed = [name for name in before if name not in after]
        for name in removed:
            self._cancel_swap(name)
            self.broker.retire(name)
        for name in changed:
            self._change(self.broker.resources[name], before[name], after[name], adapters.get(name))
        return Changes(list(added), removed, changed)

    async def close(self) -> None:
        """Give up the swaps still waiting (on shutdown)."""
        swaps = list(self._swaps.values())
        for name in list(self._swaps):
            self._cancel_swap(name)
        await asyncio.gather(*swaps, return_exceptions=True)

    def _change(self, resource: Resource, old: ResourceSettings, new: ResourceSettings, adapter: Adapter | None
                ) -> None:
        scheduler = resource.scheduler
        scheduler.queue_limit = new.queue_limit
        scheduler.poll_interval = new.poll_interval
        scheduler.busy_deadline = new.busy_deadline_seconds
        resource.status_interval = new.status_interval
        resource.max_leases = new.max_leases
        resource.min_slots_cap = new.min_slots_cap
        if later := sorted(_fields(old, new) & AT_RESTART):
            log.warning("resource %s: %s take effect when the daemon restarts", resource.name, ", ".join(later))
        self._cancel_swap(resource.name)
        if adapter is not None:
            self._swaps[resource.name] = asyncio.create_task(
                self._swap(resource, adapter, str(getattr(new, "type", resource.type))),
                name=f"qrmid reload {resource.name}")

    async def _swap(self, resource: Resource, adapter: Adapter, kind: str) -> None:
        """Pause dispatch, let the running tasks end on the old adapter, then hand the queue to ``adapter``."""
        before = (resource.draining, resource.drain_reason)
        try:
            self.broker.bind(adapter)
            await adapter.start()
            resource.drain("reloading its settings: queued tasks wait until the running ones have ended")
            while resource.scheduler.running:
                await asyncio.sleep(resource.scheduler.poll_interval)
            old, resource.adapter, resource.scheduler.adapter, resource.type = resource.adapter, adapter, adapter, kind
        except BaseException:  # cancelled by a later reload or shutdown, or the adapter did not start
            with contextlib.suppress(Exception):
                await asyncio.shield(adapter.close())
            raise
        finally:
            if before[0]:  # an admin's drain stays in force
                resource.drain(before[1])
            else:
                resource.resume()
            if self._swaps.get(resource.name) is asyncio.current_task():
                del self._swaps[resource.name]
        log.info("resource %s now runs with its reloaded settings", resource.name)
        await old.close()

    def _cancel_swap(self, name: str) -> None:
        swap = self._swaps.pop(name, None)
        if swap is not None:
            swap.cancel()


def _fields(old: ResourceSettings, new: ResourceSettings) -> set[str]:
    """The keys whose values differ between two settings of one resource (a change of type changes all)."""
    if type(old) is not type(new):
        return set(type(new).model_fields) | {"type"}
    return {key for key in type(new).model_fields if getattr(old, key) != getattr(new, key)}
