"""``qrmid cluster``: admin commands about cluster mode's PostgreSQL store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qrmid.ops.config import ConfigError, load
from qrmid.store.journal_import import ImportRefused, import_journal


@click.group()
def cluster() -> None:
    """Admin commands about cluster mode's PostgreSQL store."""


@cluster.command("import-journal")
@click.argument("journal", metavar="JOURNAL", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--config", "config_path", metavar="FILE", required=True,
              type=click.Path(path_type=Path, dir_okay=False), help="the config whose [cluster] names the database")
@click.option("--json", "as_json", is_flag=True, help="print what was moved as JSON")
def import_journal_command(journal: Path, config_path: Path, as_json: bool) -> None:
    """Move a stopped single daemon's SQLite journal into the PostgreSQL database of FILE's [cluster].

    Every task (transitions, results, logs, request ids, remote references), lease and drain is written in one
    transaction, after the schema is created or upgraded. Refused while the daemon holds the journal, while a
    member uses the database, or when the database already holds any of the tasks or leases. Quarantined journal
    rows are reported, not moved. The journal is left as it is.
    """
    try:
        loaded = load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if loaded.cluster is None:
        raise click.ClickException(f"{config_path} has no [cluster] section: add one naming the PostgreSQL "
                                   "database (docs/cluster.md)")
    settings = loaded.cluster
    try:
        moved = import_journal(journal, settings.dsn, settings.password_file, settings.connect_timeout_seconds)
    except ImportRefused as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(moved.as_dict(), indent=2))
        return
    states = ", ".join(f"{count} {state}" for state, count in sorted(moved.tasks.items()))
    click.echo(f"imported {sum(moved.tasks.values())} task(s) ({states or 'none'}), {moved.transitions} "
               f"transition(s), {moved.results} result(s), {moved.request_ids} request id(s), {moved.remote_refs} "
               f"remote reference(s), {moved.leases} lease(s), {moved.drains} drain(s), "
               f"{moved.windows} window(s), {moved.allocations} allocation(s)")
    for row in moved.quarantined:
        click.echo(f"not imported: quarantined row {row.row_id} of table {row.source} ({row.key or 'no id'}): "
                   f"{row.reason}", err=True)
