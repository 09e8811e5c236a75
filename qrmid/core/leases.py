"""Leases (QRMI acquire/release): a token bound to a resource, an owner, an optional Slurm job and an expiry."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field

from qrmid.core.errors import FailedPrecondition, NotFound, PermissionDenied, ResourceExhausted


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease. ``token`` is a secret capability; ``id`` is safe to show."""

    resource: str
    owner: str
    expires_at: float
    slurm_job_id: str = ""
    account: str = ""  # the Slurm job's account when checked with slurmctld; fair share charges it
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    created_at: float = field(default_factory=time.time)

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


class LeaseTable:
    """The live leases of every resource, found by token."""

    def __init__(self, default_ttl: float, max_ttl: float) -> None:
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._by_token: dict[str, Lease] = {}

    def grant(self, resource: str, owner: str, slurm_job_id: str = "", ttl: float = 0, limit: int = 0,
              account: str = "") -> Lease:
        """A new lease; ResourceExhausted when ``resource`` already has ``limit`` live leases (0: no limit)."""
        if limit and sum(1 for lease in self.live() if lease.resource == resource) >= limit:
            raise ResourceExhausted(f"resource {resource!r} already has its maximum of {limit} leases")
        ttl = min(ttl or self.default_ttl, self.max_ttl)
        lease = Lease(resource=resource, owner=owner, slurm_job_id=slurm_job_id, account=account,
                      expires_at=time.time() + ttl)
        self._by_token[lease.token] = lease
        return lease

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
        return self._by_token.pop(token)

    def restore(self, lease: Lease) -> None:
        """Take back a lease an earlier run of the daemon granted (from the journal)."""
        self._by_token[lease.token] = lease

    def pop_id(self, lease_id: str) -> Lease:
        """Remove and return the lease whose id is ``lease_id``, whoever owns it (admins revoking)."""
        for lease in self._by_token.values():
            if lease.id == lease_id:
                return self._by_token.pop(lease.token)
        raise NotFound(f"no live lease with id {lease_id!r} (released, expired or never granted)")

    def pop_expired(self) -> list[Lease]:
        """Remove and return every lease past its expiry."""
        expired = [lease for lease in self._by_token.values() if lease.expired]
        for lease in expired:
            del self._by_token[lease.token]
        return expired

    def live(self) -> list[Lease]:
        return [lease for lease in self._by_token.values() if not lease.expired]

    def matching(self, resource: str = "", owner: str | None = None, slurm_job_id: str = "") -> list[Lease]:
        """The live leases, oldest first, on ``resource`` and for ``slurm_job_id`` (each unless empty) of ``owner``
        (everyone's when None)."""
        return sorted((lease for lease in self.live()
                       if (not resource or lease.resource == resource) and (owner is None or lease.owner == owner)
                       and (not slurm_job_id or lease.slurm_job_id == slurm_job_id)),
                      key=lambda lease: lease.created_at)
