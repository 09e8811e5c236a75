"""Listings for the command line, as kubectl and squeue print them: a name or an id is never cut short.

On a terminal a listing is a table that fits its width: low-value columns are left out (``-o wide`` shows them)
and long text wraps, while names and ids stay whole. Anywhere else (a pipe, a file) it is plain text aligned in
columns, one line per row, every cell whole and an empty one shown as ``-``, for grep and awk. ``-o json`` (or
``--json``) prints the API's messages as JSON instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import click
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table

UNBOUNDED = 1 << 16  # wide enough to measure any table's natural width
GAP = 2  # spaces between two columns
FORMATS = ("table", "wide", "json")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Col:
    """A column of a listing."""

    header: str
    key: bool = False  # a name or an id: never cut nor wrapped
    drop: int = 0  # > 0: left out when a terminal is too narrow, the highest first
    right: bool = False  # right-aligned (numbers)
    wide: bool = False  # shown with -o wide only (and in JSON, which has every field)


def output_options(command: F) -> F:
    """The ``-o/--output`` and ``--json`` options of a listing (the command's ``output`` and ``as_json``)."""
    command = click.option("--json", "as_json", is_flag=True, help="print the listing as JSON (same as -o json)")(
        command)
    return click.option("--output", "-o", "output", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="table: the columns that fit a terminal; wide: every column; json: every field")(command)


def wants_json(output: str, json_flag: bool) -> bool:
    """Whether ``-o json`` or ``--json`` was given."""
    return json_flag or output == "json"


def span(seconds: float) -> str:
    """``seconds`` as a short duration: 42s, 3m05s, 2h07m, 3d04h."""
    seconds = max(0, int(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            return f"{seconds // size}{unit}{(seconds % size) // sub_size:02d}{sub}"
    return f"{seconds}s"


def local_time(stamp: Timestamp) -> str:
    """``stamp`` as local time to the second, in one word (``2026-12-05T14:03:59``); empty when unset."""
    if not (stamp.seconds or stamp.nanos):
        return ""
    return datetime.fromtimestamp(stamp.ToNanoseconds() / 1e9).isoformat(timespec="seconds")


def short_time(stamp: Timestamp) -> str:
    """``stamp`` as local time of day (``14:03:59``) when it is today, else its date; empty when unset."""
    if not (stamp.seconds or stamp.nanos):
        return ""
    moment = datetime.fromtimestamp(stamp.ToNanoseconds() / 1e9)
    return moment.strftime("%H:%M:%S" if moment.date() == date.today() else "%Y-%m-%d")


def print_listing(console: Console, columns: Sequence[Col], rows: Sequence[Sequence[str]], wide: bool = False) -> None:
    """Print ``rows`` under ``columns`` on ``console``: a table fitting the terminal, or plain aligned text."""
    shown = [i for i, column in enumerate(columns) if wide or not column.wide]
    cells = [[" ".join(str(row[i]).split()) or "-" for i in shown] for row in rows]
    cols = [columns[i] for i in shown]
    widths = [max([len(col.header), *(len(row[n]) for row in cells)]) for n, col in enumerate(cols)]
    if not console.is_terminal:
        for line in [[col.header for col in cols], *cells]:
            click.echo("".join(_aligned(line, cols, widths)).rstrip(), file=console.file)
        return
    keep = list(range(len(cols)))
    droppable = sorted((n for n, col in enumerate(cols) if col.drop and not wide), key=lambda n: -cols[n].drop)
    for n in droppable:
        if sum(widths[k] for k in keep) + GAP * (len(keep) - 1) <= console.width:
            break
        keep.remove(n)
    table = Table(*(Column(cols[n].header, no_wrap=cols[n].key, min_width=widths[n] if cols[n].key else None,
                           justify="right" if cols[n].right else "left", overflow="fold") for n in keep),
                  box=None, pad_edge=False, padding=(0, GAP // 2), header_style="bold")
    for row in cells:
        table.add_row(*(row[n] for n in keep))
    print_table(console, table)


def _aligned(line: Sequence[str], cols: Sequence[Col], widths: Sequence[int]) -> list[str]:
    """The cells of ``line`` padded to their column's width, each but the last followed by the gap."""
    last = len(line) - 1
    return [(cell.rjust(width) if col.right else cell.ljust(width)) + ("" if n == last else " " * GAP)
            for n, (cell, col, width) in enumerate(zip(line, cols, widths, strict=True))]


def print_table(console: Console, table: Table) -> None:
    """Print ``table``, wrapping its text columns to fit ``console``; when even that cannot fit (its no-wrap cells
    alone are wider), print it at its natural width and let the terminal fold the lines: every cell stays whole
    (Rich would otherwise shorten cells with an ellipsis)."""
    measured = Measurement.get(console, console.options.update_width(UNBOUNDED), table)
    width = console.width
    if measured.minimum <= width:
        console.print(table, crop=False)
        return
    console.width = measured.maximum
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def print_json(messages: list[Message] | Message) -> None:
    """Print API messages as JSON, with the proto field names."""
    if isinstance(messages, Message):
        doc: Any = MessageToDict(messages, preserving_proto_field_name=True)
    else:
        doc = [MessageToDict(m, preserving_proto_field_name=True) for m in messages]
    click.echo(json.dumps(doc, indent=2))
