"""``qrmid demo``: the bundled examples through a private daemon, printing their results and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from qrmid import examples
from qrmid.client import Client, payload_from_task_input
from qrmid.client_health import wait_serving
from qrmid.results import summarize

RUNS = (("bell", "local-qiskit", "a Bell-state sampler: about half 00, half 11"),
        ("pulser", "local-pulser", "a Pulser sequence: counts of the final bitstrings"))


@click.command()
def demo() -> None:
    """Start a private daemon on the embedded default, run a Bell-state sampler and a Pulser sequence
    through it, print their results, and stop it. The daemon's log is shown only if something fails."""
    with tempfile.TemporaryDirectory(prefix="qrmid-") as scratch:
        socket, log = Path(scratch) / "qrmid.sock", Path(scratch) / "qrmid.log"
        with log.open("wb") as sink:
            daemon = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--socket", str(socket),
                                       "--journal", str(Path(scratch) / "journal.db")],
                                      stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_serving(f"unix:{socket}", process=daemon)
            with Client(f"unix:{socket}") as client:
                for name, resource, what in RUNS:
                    _, data = client.run(resource, payload_from_task_input(examples.load(name)))
                    click.echo(f"{_shown(examples.HERE / f'{name}.json')} on {resource} ({what}):")
                    click.echo(json.dumps(summarize(data), indent=2))
        except Exception as exc:  # any failure: say what failed, with the daemon's log
            click.echo(f"qrmid demo failed: {exc}\nthe daemon's log:\n{log.read_text(errors='replace')}", err=True)
            raise SystemExit(1) from None
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)


def _shown(path: Path) -> Path:
    """``path`` as it is named from the current directory (e.g. qrmid/examples/bell.json in the repo)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
