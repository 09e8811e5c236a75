"""How the command line shows time windows: ``qrmid admin windows`` and the WINDOW column of ``qrmid resources``."""

from __future__ import annotations

from collections.abc import Sequence

import click
from rich.console import Console

from qrmid.cli_output import Col, local_time, print_json, print_listing, wants_json
from qrmid.core.times import clock, parse_duration, parse_time
from qrmid.v1 import quantum_resources_pb2 as pb

WINDOW_COLUMNS = (Col("ID", key=True), Col("RESOURCE", key=True), Col("KIND"), Col("START"), Col("END"),
                  Col("FOR", drop=2), Col("ORIGIN", drop=3), Col("REASON", drop=1))


def print_windows(console: Console, windows: Sequence[pb.Window], output: str, as_json: bool) -> None:
    if wants_json(output, as_json):
        print_json(list(windows))
        return
    print_listing(console, WINDOW_COLUMNS, [
        (window.id, window.resource, window.kind, local_time(window.start_time),
         local_time(window.end_time) or "not told", holders(window), window.origin, window.reason)
        for window in windows], wide=output == "wide")


def holders(window: pb.Window) -> str:
    """Who a reservation is for, e.g. "accounts physics; users alice"."""
    return "; ".join(f"{label} {','.join(names)}" for label, names in
                     (("users", window.users), ("accounts", window.accounts), ("groups", window.groups)) if names)


def summary(window: pb.Window) -> str:
    """One window in a few words, its id whole: "maintenance 14:00-16:00 (ID)"."""
    start = clock(window.start_time.ToNanoseconds() / 1e9)
    end = f"-{clock(window.end_time.ToNanoseconds() / 1e9)}" if window.HasField("end_time") else ""
    who = f" for {holders(window)}" if holders(window) else ""
    return f"{window.kind} {start}{end}{who} ({window.id})"


def window_cell(resource: pb.Resource) -> str:
    """The WINDOW column of ``qrmid resources``: the window in force, then the next one."""
    parts = []
    if resource.HasField("active_window"):
        parts.append(f"now: {summary(resource.active_window)}")
    if resource.HasField("next_window"):
        parts.append(f"next: {summary(resource.next_window)}")
    return "; ".join(parts)


def when(value: str, option: str) -> float:
    """Epoch seconds of a time option; a usage error saying what is accepted otherwise."""
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def length(value: str, option: str) -> float:
    """Seconds of a duration option; a usage error saying what is accepted otherwise."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
