"""``qrmid config``: admin commands about the config file."""

from __future__ import annotations

from pathlib import Path

import click

from qrmid.ops import config_default, qrmi_import
from qrmid.ops.config import ConfigError, load


@click.group()
def config() -> None:
    """Admin commands about the config file."""


@config.command("check")
@click.argument("path", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False))
def check(path: Path) -> None:
    """Check a config file as `qrmid serve` and reload would: keys, ranges, a secret-holding file's mode.

    Starts nothing; exits 1 with the file, the key and the fault when the file is unusable.
    """
    try:
        loaded = load(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: OK; resources: {', '.join(r.name for r in loaded.resources)}")


@config.command("default")
def default() -> None:
    """Print the embedded default config (what `qrmid serve` uses without --config) as TOML, every key with its
    description and bounds as a comment.

    A start for a site's file: `qrmid config default > qrmid.toml`, then keep what you change. The socket and
    journal paths shown are those of the user running the command.
    """
    click.echo(config_default.render(), nl=False)


@config.command("import-qrmi")
@click.argument("path", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False))
def import_qrmi(path: Path) -> None:
    """Print the resources of a QRMI qrmi_config.json as qrmid config (TOML).

    Settings, secrets included, are copied as they are: write the output to a file only root can read
    (chmod 600). What cannot be mapped is reported on stderr.
    """
    try:
        imported = qrmi_import.read(path)
    except qrmi_import.QrmiConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in imported.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not imported.resources:
        raise click.ClickException(f"{path}: no resource could be imported")
    click.echo("warning: the output holds the resources' credentials as they are in the source: keep it in a file "
               "only root can read (chmod 600)", err=True)
    click.echo(f"# resources imported from {path}\n")
    click.echo(qrmi_import.to_toml(imported), nl=False)
