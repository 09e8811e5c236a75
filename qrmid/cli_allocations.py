"""Listings of allocations, as ``qrmid allocation`` and ``qrmid admin allocation show`` print them."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console

from qrmid.cli_output import Col, local_time, print_json, print_listing, wants_json
from qrmid.v1 import quantum_resources_pb2 as pb

ALLOCATION_COLUMNS = (Col("ACCOUNT", key=True), Col("RESOURCES", key=True), Col("LIMIT"), Col("PERIOD"),
                      Col("QPU-S USED/BUDGET", right=True), Col("SHOTS USED/BUDGET", right=True), Col("RESETS", drop=1))


def print_allocations(console: Console, allocations: Sequence[pb.Allocation], output: str, as_json: bool) -> None:
    """``allocations`` as a listing (every name whole), or JSON."""
    if wants_json(output, as_json):
        print_json(list(allocations))
        return
    print_listing(console, ALLOCATION_COLUMNS, [
        (value.account, ",".join(value.resources) or "*", value.limit, value.period,
         f"{value.used_qpu_seconds:.1f}/{value.qpu_seconds:g}" if value.qpu_seconds else "",
         f"{value.used_shots}/{value.shots}" if value.shots else "",
         local_time(value.reset_time) or "never") for value in allocations], wide=output == "wide")
