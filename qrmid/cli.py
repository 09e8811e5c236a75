"""The ``qrmid`` command: run the daemon, and talk to it as a user."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc
from rich.console import Console
from rich.table import Column, Table

from qrmid import examples
from qrmid.admin_cli import admin
from qrmid.cli_cluster import cluster as cluster_commands
from qrmid.cli_config import config as config_commands
from qrmid.cli_output import print_json, print_table
from qrmid.client import Client, TaskFailed, payload_from_task_input
from qrmid.client_auth import ClientAuth
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _name(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def _state(task: pb.Task) -> str:
    return _name(pb.TaskState, task.state, "TASK_STATE_")


@contextmanager
def _client(ctx: click.Context) -> Iterator[Client]:
    """A client on the address given to the command; gRPC refusals become one clear error line."""
    try:
        auth = ClientAuth.resolve(ctx.obj["auth"], token_file=ctx.obj["token_file"], tls_ca=ctx.obj["tls_ca"])
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with Client(ctx.obj["address"], auth=auth) as client:
            yield client
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except grpc.RpcError as exc:
        code = exc.code().name if exc.code() else "UNKNOWN"
        raise click.ClickException(f"{code}: {exc.details()}") from None


@click.group()
@click.option("--address", envvar="QRMID_ADDRESS", default=None, metavar="ADDR",
              help="daemon address: unix:PATH, an absolute socket path, HOST:PORT or a gRPC target such as "
                   "dns:///NAME:PORT; several cluster members separated by commas "
                   "[env QRMID_ADDRESS; default: the default socket]")
@click.option("--auth", type=click.Choice(["none", "munge", "token"]), default=None,
              help="how to authenticate [env QRMID_AUTH; default: none]")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="file holding the bearer token for --auth token [env QRMID_TOKEN_FILE]")
@click.option("--tls-ca", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CA bundle of the daemon's TLS certificate; turns TLS on [env QRMID_TLS_CA]")
@click.version_option(package_name="qrmid")
@click.pass_context
def main(ctx: click.Context, address: str | None, auth: str | None, token_file: Path | None,
         tls_ca: Path | None) -> None:
    """qrmid: QRMI quantum resources served by a node-local daemon."""
    ctx.obj = {"address": address, "auth": auth, "token_file": token_file, "tls_ca": tls_ca}


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="TOML config file (default: the embedded default)")
@click.option("--socket", type=click.Path(path_type=Path), default=None, help="override [daemon] socket")
@click.option("--tcp", default=None, metavar="HOST:PORT", help="override [daemon] tcp")
@click.option("--journal", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="override [journal] path")
def serve(config_path: Path | None, socket: Path | None, tcp: str | None, journal: Path | None) -> None:
    """Run the daemon until SIGTERM; SIGHUP re-reads the config file."""
    from qrmid.daemon import Daemon, StartupError
    from qrmid.ops import config, logging

    try:
        settings = config.load(config_path)
    except config.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if socket is not None:
        settings.daemon.socket = socket
    if tcp is not None:
        settings.daemon.tcp = tcp
    if journal is not None:
        settings.journal.path = journal
    logging.setup(settings.daemon.log_level, settings.daemon.log_format)
    try:
        asyncio.run(Daemon(settings, config_path).run())
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the resources as JSON")
@click.pass_context
def resources(ctx: click.Context, as_json: bool) -> None:
    """List the resources and their state."""
    with _client(ctx) as client:
        listed = client.list_resources()
    if as_json:
        print_json(list(listed))
        return
    table = Table("NAME", "TYPE", "STATUS", "SLOTS FREE/TOTAL", "QUEUED", "RUNNING", "REASON")
    for r in listed:
        table.add_row(r.name, r.type, _name(pb.ResourceStatus, r.status, "RESOURCE_STATUS_"),
                      f"{r.capacity.slots_free}/{r.capacity.slots_total}", str(r.queue_length),
                      str(r.running_tasks), r.status_reason)
    print_table(out, table)


@main.command()
@click.argument("resource")
@click.pass_context
def target(ctx: click.Context, resource: str) -> None:
    """Print a resource's device description (JSON)."""
    with _client(ctx) as client:
        click.echo(client.target(resource))


@main.command()
@click.argument("resource")
@click.option("--slurm-job-id", default="", help="Slurm job the lease belongs to")
@click.option("--ttl", type=int, default=0, help="lifetime in seconds (0: the daemon's default)")
@click.pass_context
def acquire(ctx: click.Context, resource: str, slurm_job_id: str, ttl: int) -> None:
    """Take a lease on RESOURCE and print its token."""
    with _client(ctx) as client:
        click.echo(client.acquire(resource, slurm_job_id, ttl).token)


@main.command()
@click.argument("token")
@click.pass_context
def release(ctx: click.Context, token: str) -> None:
    """End the lease behind TOKEN."""
    with _client(ctx) as client:
        response = client.release(token)
    err.print(f"released lease {response.lease.id}; {response.cancelled_tasks} task(s) cancelled")


@main.command()
@click.option("--resource", default="", help="only this resource's leases")
@click.option("--slurm-job-id", default="", help="only this Slurm job's leases")
@click.option("--json", "as_json", is_flag=True, help="print the leases as JSON")
@click.pass_context
def leases(ctx: click.Context, resource: str, slurm_job_id: str, as_json: bool) -> None:
    """List your live leases (their tokens are never shown)."""
    with _client(ctx) as client:
        listed = client.list_leases(resource, slurm_job_id)
    if as_json:
        print_json(list(listed))
        return
    table = Table(Column("ID", no_wrap=True), "RESOURCE", "OWNER", "SLURM JOB", Column("EXPIRES", no_wrap=True))
    for lease in listed:
        table.add_row(lease.id, lease.resource, lease.owner, lease.slurm_job_id or "-",
                      lease.expire_time.ToDatetime().isoformat(timespec="seconds") + "Z")
    print_table(out, table)


@main.command()
@click.argument("resource")
@click.argument("input_file", metavar="INPUT.json", type=click.File("r"))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="write the result as the backend returned it to this file")
@click.option("--raw", is_flag=True, help="print the result as the backend returned it, not a summary")
@click.option("--lease", "lease_token", default="", envvar="QRMI_JOB_ACQUISITION_TOKEN",
              help="lease token [env QRMI_JOB_ACQUISITION_TOKEN]")
@click.option("--priority", default="", metavar="CLASS",
              help="priority class, e.g. interactive, production, low (default: the resource's)")
@click.option("--detach", is_flag=True, help="print the task id once the task is queued, without waiting for it")
@click.pass_context
def run(ctx: click.Context, resource: str, input_file: Any, output: Path | None, raw: bool,
        lease_token: str, priority: str, detach: bool) -> None:
    """Run a task from INPUT.json (QRMI task_runner schema) on RESOURCE and print its result."""
    try:
        payload = payload_from_task_input(json.load(input_file))
    except (ValueError, AttributeError, TypeError) as exc:
        raise click.ClickException(f"{input_file.name}: {exc}") from None
    with _client(ctx) as client:
        task = started = client.start_task(resource, payload, lease_token=lease_token, priority=priority)
        if detach:
            click.echo(task.id)
            return
        with err.status(f"task {task.id}: {_state(task)}") as status:
            for task in client.watch(started.id):
                where = f" (position {task.queue_position})" if task.queue_position else ""
                if task.HasField("estimated_start_time"):
                    eta = task.estimated_start_time.ToDatetime().isoformat(timespec="seconds")
                    where += f", expected to start at {eta}Z"
                status.update(f"task {task.id}: {_state(task)}{where}")
        err.print(f"task {task.id}: {_state(task)}")
        if task.state != pb.TASK_STATE_COMPLETED:
            raise click.ClickException(str(TaskFailed(task)))
        _emit(client.result(task.id), output, raw)


@main.command()
@click.argument("task_id")
@click.pass_context
def status(ctx: click.Context, task_id: str) -> None:
    """Show a task's state."""
    with _client(ctx) as client:
        _show(client.task(task_id))


@main.command()
@click.argument("task_id")
@click.pass_context
def watch(ctx: click.Context, task_id: str) -> None:
    """Print a task's state changes until it ends."""
    with _client(ctx) as client:
        for task in client.watch(task_id):
            where = f" position={task.queue_position}" if task.queue_position else ""
            click.echo(f"{time.strftime('%H:%M:%S')} {task.id} {_state(task)}{where} {task.reason}".rstrip())


@main.command()
@click.argument("task_id")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="write the result as the backend returned it to this file")
@click.option("--raw", is_flag=True, help="print the result as the backend returned it, not a summary")
@click.pass_context
def result(ctx: click.Context, task_id: str, output: Path | None, raw: bool) -> None:
    """Print a completed task's result."""
    with _client(ctx) as client:
        _emit(client.result(task_id), output, raw)


@main.command()
@click.argument("task_id")
@click.pass_context
def logs(ctx: click.Context, task_id: str) -> None:
    """Print a task's logs."""
    with _client(ctx) as client:
        click.echo(client.logs(task_id), nl=False)


@main.command()
@click.argument("task_id")
@click.pass_context
def cancel(ctx: click.Context, task_id: str) -> None:
    """Cancel a queued or running task."""
    with _client(ctx) as client:
        _show(client.stop_task(task_id))


@main.command()
def demo() -> None:
    """Start a private daemon on the embedded default, run a Bell-state sampler and a Pulser sequence
    through it, print their results, and stop it."""
    with tempfile.TemporaryDirectory(prefix="qrmid-") as scratch:
        socket = Path(scratch) / "qrmid.sock"
        err.print(f"starting qrmid on {socket} ...")
        daemon = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--socket", str(socket),
                                   "--journal", str(Path(scratch) / "journal.db")])
        try:
            with Client(f"unix:{socket}") as client:
                _until(client.list_resources, alive=lambda: daemon.poll() is None, timeout=120)
                for resource, name in (("local-qiskit", "bell"), ("local-pulser", "pulser")):
                    err.print(f"running examples/{name}.json on {resource} ...")
                    task, data = client.run(resource, payload_from_task_input(examples.load(name)))
                    err.print(f"task {task.id}: {_state(task)}")
                    out.print_json(json.dumps(summarize(data)))
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)


def _until(call: Callable[[], T], alive: Callable[[], bool], timeout: float) -> T:
    """``call()``'s value once it stops failing with UNAVAILABLE (the daemon is starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline or not alive():
                raise
            time.sleep(0.2)


def _emit(data: bytes, output: Path | None, raw: bool) -> None:
    if output is not None:
        output.write_bytes(data)
        err.print(f"result written to {output} ({len(data)} bytes)")
    elif raw:
        sys.stdout.buffer.write(data + b"\n")
    else:
        out.print_json(json.dumps(summarize(data)))


def _show(task: pb.Task) -> None:
    rows = {"id": task.id, "resource": task.resource, "state": _state(task), "owner": task.owner}
    if task.queue_position:
        rows["queue position"] = str(task.queue_position)
    stamps = (("expected start", task.estimated_start_time), ("created", task.create_time),
              ("started", task.start_time), ("ended", task.end_time))
    for label, stamp in stamps:
        if stamp.seconds or stamp.nanos:
            rows[label] = stamp.ToDatetime().isoformat(timespec="milliseconds") + "Z"
    for label, value in (("priority", task.priority), ("account", task.account), ("lease", task.lease_id),
                         ("slurm job", task.slurm_job_id), ("reason", task.reason)):
        if value:
            rows[label] = value
    table = Table(show_header=False, box=None)
    for key, value in rows.items():
        table.add_row(key, value)
    print_table(out, table)


main.add_command(config_commands)
main.add_command(cluster_commands)
main.add_command(admin)
