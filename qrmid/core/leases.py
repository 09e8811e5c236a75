"""Leases (QRMI acquire/release): a token bound to a resource, an owner, an optional Slurm job and an expiry."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum

from qrmid.core.errors import FailedPrecondition, NotFound, PermissionDenied, ResourceExhausted


class LeaseMode(Enum):
    """How a lease holds its resource: shared with everyone's tasks, or exclusive (only its tasks dispatch)."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"


def new_token() -> str:
    """A lease token: 256 random bits, URL-safe, never starting with '-' (a command line would read it as an
    option, e.g. ``qrmid release TOKEN``)."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease. ``token`` is a secret capability; ``id`` is safe to show."""

    resource: str
    owner: str
    expires_at: float
    slurm_job_id: str = ""
    account: str = ""  # the Slurm job's account when checked with slurmctld; fair share charges it
    mode: LeaseMode = LeaseMode.SHARED
    min_slots: int = 0  # slots kept free for the lease's tasks
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token: str = field(default_factory=new_token, repr=False)
    created_at: float = field(default_factory=time.time)

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


class LeaseTable:
    """The live leases of every resource, found by token, and indexed by owner and by resource so that one
    user's leases, or one resource's, are found without scanning everyone's."""

    def __init__(self, default_ttl: float, max_ttl: float) -> None:
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._by_token: dict[str, Lease] = {}
        self._by_owner: dict[str, dict[str, Lease]] = {}  # owner -> token -> lease
        self._by_resource: dict[str, dict[str, Lease]] = {}  # resource -> token -> lease

    def grant(self, resource: str, owner: str, slurm_job_id: str = "", ttl: float = 0, limit: int = 0,
              account: str = "", owner_limit: int = 0, mode: LeaseMode = LeaseMode.SHARED,
              min_slots: int = 0) -> Lease:
        """A new lease; ResourceExhausted when ``resource`` already has ``limit`` live leases, or ``owner`` has
        ``owner_limit`` live leases on all resources together (0: no limit); FailedPrecondition for a second
        exclusive lease on ``resource``."""
        if mode is LeaseMode.EXCLUSIVE and (holder := self.exclusive(resource)) is not None:
            raise FailedPrecondition(f"resource {resource!r} is held by exclusive lease {holder.id} already")
        self.check_room(resource, owner, limit, owner_limit)
        ttl = min(ttl or self.default_ttl, self.max_ttl)
        lease = Lease(resource=resource, owner=owner, slurm_job_id=slurm_job_id, account=account,
                      expires_at=time.time() + ttl, mode=mode, min_slots=min_slots)
        self._add(lease)
        return lease

    def check_room(self, resource: str, owner: str, limit: int = 0, owner_limit: int = 0) -> None:
        """ResourceExhausted when ``resource`` has ``limit`` live leases, or ``owner`` ``owner_limit`` (0: no limit)."""
        if limit and _live_count(self._by_resource.get(resource)) >= limit:
            raise ResourceExhausted(f"resource {resource!r} already has its maximum of {limit} leases")
        if owner_limit and (held := _live_count(self._by_owner.get(owner))) >= owner_limit:
            raise ResourceExhausted(f"you hold {held} live leases, the per-user limit ([leases] max_per_user = "
                                    f"{owner_limit}); release leases you no longer use (qrmid leases, then "
                                    "qrmid release TOKEN) or let them expire")

    def check(self, token: str, resource: str, owner: str) -> Lease:
        """The live lease behind ``token``, which must be ``owner``'s and on ``resource``."""
        lease = self._by_token.get(token)
        if lease is None:
            raise NotFound("unknown lease token (released, expired or never granted); acquire a new lease")
        if lease.expired:
            raise FailedPrecondition(f"lease {lease.id} expired; acquire a new lease")
        if lease.owner != owner:
            raise PermissionDenied(f"lease {lease.id} belongs to another user")
        if lease.resource != resource:
            raise FailedPrecondition(f"lease {lease.id} is on resource {lease.resource!r}, not {resource!r}")
        return lease

    def pop(self, token: str, owner: str, admin: bool = False) -> Lease:
        """Remove and return the lease behind ``token``, which must be ``owner``'s unless ``admin``."""
        lease = self._by_token.get(token)
        if lease is None:
            raise NotFound("unknown lease token (already released, expired or never granted)")
        if lease.owner != owner and not admin:
            raise PermissionDenied(f"lease {lease.id} belongs to another user")
        return self._remove(lease)

    def restore(self, lease: Lease) -> None:
        """Take back a lease an earlier run of the daemon granted (from the journal)."""
        self._add(lease)

    def find(self, lease_id: str) -> Lease | None:
        """The live lease whose id is ``lease_id``, if any."""
        return next((lease for lease in self._by_token.values() if lease.id == lease_id), None)

    def pop_id(self, lease_id: str) -> Lease:
        """Remove and return the lease whose id is ``lease_id``, whoever owns it (admins revoking)."""
        for lease in self._by_token.values():
            if lease.id == lease_id:
                return self._remove(lease)
        raise NotFound(f"no live lease with id {lease_id!r} (released, expired or never granted)")

    def pop_expired(self) -> list[Lease]:
        """Remove and return every lease past its expiry."""
        expired = [lease for lease in self._by_token.values() if lease.expired]
        for lease in expired:
            self._remove(lease)
        return expired

    def live(self) -> list[Lease]:
        return [lease for lease in self._by_token.values() if not lease.expired]

    def matching(self, resource: str = "", owner: str | None = None, slurm_job_id: str = "") -> list[Lease]:
        """The live leases, oldest first, on ``resource`` and for ``slurm_job_id`` (each unless empty) of ``owner``
        (everyone's when None)."""
        if owner is not None:
            candidates = self._by_owner.get(owner, {}).values()
        elif resource:
            candidates = self._by_resource.get(resource, {}).values()
        else:
            candidates = self._by_token.values()
        return sorted((lease for lease in candidates
                       if not lease.expired and (not resource or lease.resource == resource)
                       and (not slurm_job_id or lease.slurm_job_id == slurm_job_id)),
                      key=lambda lease: lease.created_at)

    def exclusive(self, resource: str) -> Lease | None:
        """The live exclusive lease on ``resource``, if any."""
        return next((lease for lease in self._by_resource.get(resource, {}).values()
                     if lease.mode is LeaseMode.EXCLUSIVE and not lease.expired), None)

    def reserving(self, resource: str) -> list[Lease]:
        """The live leases on ``resource`` that keep slots free for their tasks (min_slots)."""
        return [lease for lease in self._by_resource.get(resource, {}).values()
                if lease.min_slots and not lease.expired]

    def _add(self, lease: Lease) -> None:
        self._by_token[lease.token] = lease
        self._by_owner.setdefault(lease.owner, {})[lease.token] = lease
        self._by_resource.setdefault(lease.resource, {})[lease.token] = lease

    def _remove(self, lease: Lease) -> Lease:
        del self._by_token[lease.token]
        for index, key in ((self._by_owner, lease.owner), (self._by_resource, lease.resource)):
            held = index[key]
            del held[lease.token]
            if not held:
                del index[key]
        return lease


def _live_count(leases: dict[str, Lease] | None) -> int:
    return sum(1 for lease in leases.values() if not lease.expired) if leases else 0
