"""Benchmark of lease lookups, run by hand: ``python -m qrmid.bench.leases``.

With 100,000 live leases held by 100 users (1,000 each, the default per-user cap) on 4 resources, it times one
user's ``ListLeases`` lookup, one more ``Acquire`` (its cap checks included) and a release, each with its ratio to
a full scan of every lease measured in the same run (what each lookup cost before leases were indexed by owner).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from qrmid.bench.timing import timed
from qrmid.core.leases import Lease, LeaseTable

USERS = 100
PER_USER = 1_000
RESOURCES = 4
REPEAT = 20  # calls per timed round


def main() -> None:
    table = LeaseTable(default_ttl=3600, max_ttl=3600)
    for index in range(USERS * PER_USER):
        table.grant(f"r{index % RESOURCES}", f"user{index % USERS}", slurm_job_id=str(index))
    user = "user7"

    def scan() -> list[Lease]:  # the baseline: every live lease looked at, as before the owner index
        return sorted((lease for lease in table.live() if lease.owner == user), key=lambda lease: lease.created_at)

    def acquire_release() -> None:
        lease = table.grant("r0", "newcomer", owner_limit=PER_USER, limit=0)
        table.pop(lease.token, "newcomer")

    baseline = timed(scan, REPEAT)
    rows = [("ListLeases of one user", timed(lambda: table.matching(owner=user), REPEAT)),
            ("ListLeases of one user on one resource", timed(lambda: table.matching("r1", user), REPEAT)),
            ("Acquire + Release (per-user cap checked)", timed(acquire_release, REPEAT))]
    out = Table(title=f"{USERS * PER_USER:,} live leases, {USERS} users, {RESOURCES} resources")
    out.add_column("operation")
    out.add_column("ms", justify="right")
    out.add_column("x full scan", justify="right")
    out.add_row("full scan of every lease (baseline)", f"{baseline * 1e3:.3f}", "1")
    for what, seconds in rows:
        out.add_row(what, f"{seconds * 1e3:.3f}", f"{seconds / baseline:.4f}")
    Console().print(out)


if __name__ == "__main__":
    main()
