"""Benchmark of lease lookups, run by hand: ``python -m qrmid.bench.leases``.

With 100,000 live leases held by 100 users (1,000 each, the default per-user cap) on 4 resources, it times one
user's ``ListLeases`` lookup, one more ``Acquire`` (its cap checks included) and a release, each with its ratio to
a full scan of every lease measured in the same run (what each lookup cost before leases were indexed by owner),
alternating round by round: min–median–max of the rounds, and the ratio of the medians.
"""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

from qrmid.bench.timing import spread, timed
from qrmid.core.leases import Lease, LeaseTable

USERS = 100
PER_USER = 1_000
RESOURCES = 4
REPEAT = 20  # calls per timed round
ROUNDS = 5


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

    operations = {"full scan of every lease (baseline)": scan,
                  "ListLeases of one user": lambda: table.matching(owner=user),
                  "ListLeases of one user on one resource": lambda: table.matching("r1", user),
                  "Acquire + Release (per-user cap checked)": acquire_release}
    seconds: dict[str, list[float]] = {what: [] for what in operations}
    for _ in range(ROUNDS):  # the operations alternate, round by round
        for what, operation in operations.items():
            seconds[what].append(timed(operation, REPEAT))
    baseline = statistics.median(seconds["full scan of every lease (baseline)"])
    out = Table(title=f"{USERS * PER_USER:,} live leases, {USERS} users, {RESOURCES} resources: min–median–max of "
                      f"{ROUNDS} rounds")
    out.add_column("operation")
    out.add_column("ms per call", justify="right")
    out.add_column("x full scan (medians)", justify="right")
    for what, values in seconds.items():
        out.add_row(what, spread(values, "", 1e3, 3).strip(), f"{statistics.median(values) / baseline:.4f}")
    Console(width=150).print(out)  # never cut a figure, in a terminal or a pipe


if __name__ == "__main__":
    main()
