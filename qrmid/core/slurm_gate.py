"""Slurm gating: while a resource is offline, paused, draining or in a maintenance window, a license-only Slurm
reservation named ``qrmid-<resource>`` takes every unit of the resource's license (that other reservations leave),
so new jobs asking for it wait PENDING (reason ``Licenses``) instead of holding nodes idle; the reservation is
deleted once the resource is back. A running job keeps its license and runs on.

Only reservations named by ``reservation_name`` are ever created or deleted, and only for the resources whose
config sets ``slurm_gate``. A status must hold for ``debounce`` seconds before slurmctld is told; a failed call
is retried every ``retry`` seconds; slurmctld's reservations are re-read every ``recheck`` seconds, so one
deleted or created by hand is put right. In cluster mode only the member dispatching a resource gates it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from qrmid.core.errors import Unavailable
from qrmid.core.resource import Resource, ResourceStatus
from qrmid.core.slurm import Scontrol

log = logging.getLogger(__name__)

PREFIX = "qrmid-"


def reservation_name(resource: str) -> str:
    """The reservation qrmid manages for ``resource``."""
    return PREFIX + resource


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a resource's license is held, and until when (None: until the resource is back)."""

    reason: str
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class GateView:
    """What ``qrmid admin resources`` shows of one gated resource."""

    resource: str
    license: str
    reservation: str
    state: str  # "held", "open", "unknown" (not read from slurmctld yet) or "not managed here"
    detail: str  # why it is held, or the last failure to reach slurmctld


class _Gate:
    """One gated resource: what is wanted, since when, and what slurmctld holds."""

    def __init__(self, license: str) -> None:
        self.license = license
        self.want: Hold | None = None
        self.since = float("-inf")  # when ``want`` last changed
        self.held: bool | None = None  # None: not read from slurmctld yet
        self.until: datetime | None = None  # the end of the reservation qrmid made
        self.managed = False
        self.error = ""
        self.retry_at = float("-inf")


class SlurmGate:
    """Keeps each gated resource's reservation in step with its status, off the event loop's critical path."""

    def __init__(self, resources: Callable[[], Mapping[str, Resource]], scontrol: Scontrol, *,
                 debounce: float, retry: float, recheck: float) -> None:
        self.resources = resources
        self.tune(scontrol, debounce=debounce, retry=retry, recheck=recheck)
        self.user = pwd.getpwuid(os.geteuid()).pw_name  # the only user the reservations let in
        self._gates: dict[str, _Gate] = {}
        self._windows: dict[str, datetime] = {}
        self._read_at = float("-inf")

    def tune(self, scontrol: Scontrol, *, debounce: float, retry: float, recheck: float) -> None:
        """How slurmctld is reached, and the timings (``[slurm]``, re-read on reload)."""
        self.scontrol = scontrol
        self.debounce = debounce
        self.retry = retry
        self.recheck = recheck
        self.interval = max(0.1, min(1.0, debounce / 4))

    def configure(self, licenses: Mapping[str, str]) -> None:
        """Gate the resources named in ``licenses``, each with its Slurm license; a resource no longer listed keeps
        whatever reservation it has (an admin deletes it with ``scontrol delete``)."""
        self._gates = {name: self._gates.get(name) or _Gate(license) for name, license in licenses.items()}
        for name, license in licenses.items():
            self._gates[name].license = license

    def unavailable_until(self, resource: str, until: datetime | None) -> None:
        """Hold ``resource``'s license until ``until`` (a maintenance window; the reservation ends by itself then,
        even if qrmid is stopped); None ends the window."""
        if until is None:
            self._windows.pop(resource, None)
        else:
            self._windows[resource] = until

    def views(self) -> list[GateView]:
        return [GateView(name, gate.license, reservation_name(name), _state(gate), gate.error or
                         (gate.want.reason if gate.want and gate.held else ""))
                for name, gate in self._gates.items()]

    async def run(self) -> None:
        """Check every gated resource each ``interval`` seconds, forever."""
        while True:
            try:
                await self.step()
            except Exception:  # never stops gating: the next step tries again
                log.exception("slurm gate: check failed")
            await asyncio.sleep(self.interval)

    async def step(self) -> None:
        """Bring each managed reservation in step with its resource's status once that status has held for
        ``debounce`` seconds."""
        now = time.monotonic()
        resources = self.resources()
        reservations: set[str] | None = None
        for name, gate in list(self._gates.items()):
            resource = resources.get(name)
            if resource is None or not (resource.dispatch and resource.scheduler.leading):
                gate.managed, gate.held = False, None  # the member that dispatches it gates it
                continue
            gate.managed = True
            if not resource.checked.is_set():
                continue  # its status is not known yet
            want = self._wanted(resource)
            if _key(want) != _key(gate.want):
                gate.since = now
            gate.want = want
            if now - gate.since < self.debounce or now < gate.retry_at:
                continue
            try:
                if reservations is None and (gate.held is None or now - self._read_at >= self.recheck):
                    reservations = set(await self.scontrol.reservations())
                    self._read_at = now
                if reservations is not None:
                    gate.held = reservation_name(name) in reservations
                await self._apply(name, gate)
            except Unavailable as exc:
                if str(exc) != gate.error:
                    log.warning("slurm gate %s: %s; retrying every %g s", name, exc, self.retry)
                gate.error, gate.retry_at = str(exc), time.monotonic() + self.retry
            else:
                if gate.error:
                    log.info("slurm gate %s: slurmctld answers again", name)
                gate.error = ""

    def _wanted(self, resource: Resource) -> Hold | None:
        until = self._windows.get(resource.name)
        if until is not None and until <= datetime.now(UTC):
            del self._windows[resource.name]
            until = None
        if until is not None:
            return Hold(f"maintenance until {until.isoformat(timespec='seconds')}", until)
        view = resource.view()
        return None if view.status is ResourceStatus.ONLINE else Hold(f"{view.status.value}: {view.status_reason}")

    async def _apply(self, name: str, gate: _Gate) -> None:
        reservation = reservation_name(name)
        if gate.want is None:
            if gate.held:
                await self.scontrol.delete(reservation)
                log.info("slurm gate %s: %s back online, reservation %s deleted: jobs asking for license %s may "
                         "start", name, name, reservation, gate.license)
            gate.held, gate.until = False, None
            return
        if gate.held and gate.until == gate.want.until:
            return
        if gate.held:  # held with another end: made again
            await self.scontrol.delete(reservation)
            gate.held = False
        license = await self.scontrol.license(gate.license)
        units = await self.scontrol.hold(reservation, license, self.user, gate.want.until)
        gate.held, gate.until = True, gate.want.until
        log.warning("slurm gate %s: %s; reservation %s holds %d of the %d units of license %s: new jobs asking for "
                    "it wait PENDING", name, gate.want.reason, reservation, units, license.total, license.name)


def _key(hold: Hold | None) -> tuple[bool, datetime | None]:
    """What decides the reservation (the reason's text aside)."""
    return (hold is not None, hold.until if hold else None)


def _state(gate: _Gate) -> str:
    if not gate.managed:
        return "not managed here"
    return {True: "held", False: "open", None: "unknown"}[gate.held]
