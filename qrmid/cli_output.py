"""Listings for the command line: tables that never cut a name or an id, whatever the terminal's or pipe's
width, and the same listings as JSON."""

from __future__ import annotations

import json
from typing import Any

import click
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

UNBOUNDED = 1 << 16  # wide enough to measure any table's natural width


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` at its natural width when that is wider than ``console``: a narrow terminal folds the
    long lines, but every cell stays whole (Rich would otherwise shorten cells with an ellipsis)."""
    natural = Measurement.get(console, console.options.update_width(UNBOUNDED), table).maximum
    width = console.width
    console.width = max(width, natural)
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
