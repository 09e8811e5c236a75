"""The ``qrmid`` command: run the daemon, and talk to it as a user."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.status import Status

from qrmid.admin_cli import admin
from qrmid.cli_allocations import print_allocations
from qrmid.cli_cluster import cluster as cluster_commands
from qrmid.cli_config import config as config_commands
from qrmid.cli_demo import demo
from qrmid.cli_output import (
    Col,
    local_time,
    output_options,
    print_json,
    print_listing,
    short_time,
    span,
    wants_json,
)
from qrmid.cli_windows import window_cell
from qrmid.client import TERMINAL, Client, TaskFailed, payload_from_task_input, sampler_payload
from qrmid.client_auth import ClientAuth
from qrmid.client_members import Address
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_SHOTS = 1024  # of a circuit given with --qasm, as IBM's Sampler V2 defaults
INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C, as the shell's


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
                   "[env QRMID_ADDRESS; default: /run/qrmid/qrmid.sock for root, else a private daemon's socket]")
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
    """qrmid: QRMI quantum resources served by a node-local daemon.

    Documentation: README.md ("Using it") and docs/ in qrmid's source tree; docs/operations.md for running
    and administering the daemon, docs/python.md for Python code. `qrmid COMMAND --help` describes each command.
    """
    from_env = ctx.get_parameter_source("address") is click.core.ParameterSource.ENVIRONMENT
    given = Address(address, "QRMID_ADDRESS" if from_env else "--address") if address else None  # named in errors
    ctx.obj = {"address": given, "auth": auth, "token_file": token_file, "tls_ca": tls_ca}


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="TOML config file (default: the embedded default)")
@click.option("--socket", type=click.Path(path_type=Path), default=None, help="override [daemon] socket")
@click.option("--tcp", default=None, metavar="HOST:PORT", help="override [daemon] tcp")
@click.option("--journal", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="override [journal] path")
def serve(config_path: Path | None, socket: Path | None, tcp: str | None, journal: Path | None) -> None:
    """Run the daemon until SIGTERM; SIGHUP re-reads the config file.

    Configuration: README.md ("Configuration", "Running it as a service") and docs/operations.md in qrmid's
    source tree; `qrmid config check FILE` checks a file without starting anything.
    """
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


RESOURCE_COLUMNS = (Col("NAME", key=True), Col("TYPE", drop=1), Col("STATUS"), Col("FREE/SLOTS", right=True),
                    Col("QUEUED", right=True), Col("RUNNING", right=True), Col("WINDOW", drop=2),
                    Col("REASON"))


@main.command()
@output_options
@click.pass_context
def resources(ctx: click.Context, output: str, as_json: bool) -> None:
    """List the resources and their state."""
    with _client(ctx) as client:
        listed = client.list_resources()
    if wants_json(output, as_json):
        print_json(list(listed))
        return
    print_listing(out, RESOURCE_COLUMNS, [
        (r.name, r.type, _name(pb.ResourceStatus, r.status, "RESOURCE_STATUS_"),
         f"{r.capacity.slots_free}/{r.capacity.slots_total}", str(r.queue_length), str(r.running_tasks),
         window_cell(r), "; ".join(filter(None, (_exclusive(r), r.status_reason)))) for r in listed],
        wide=output == "wide")


def _exclusive(resource: pb.Resource) -> str:
    """Who holds ``resource`` exclusively (Slurm job and user: short words, never cut; the lease id is in --json), and
    how many exclusive Acquires wait for it."""
    held = ""
    if resource.HasField("exclusive_lease"):
        lease = resource.exclusive_lease
        job = f"Slurm job {lease.slurm_job_id} " if lease.slurm_job_id else ""
        held = f"held exclusively by {job}(user {lease.owner})"
    waiting = f"{resource.exclusive_waiting} exclusive Acquire(s) waiting" if resource.exclusive_waiting else ""
    return ", ".join(part for part in (held, waiting) if part)


@main.command()
@output_options
@click.pass_context
def allocation(ctx: click.Context, output: str, as_json: bool) -> None:
    """Show the allocations charging your tasks (yours, and your jobs' Slurm accounts'): budgets of QPU-seconds and
    shots, what is used this period, and when it resets."""
    with _client(ctx) as client:
        listed = client.my_allocations()
    if not listed and not wants_json(output, as_json):
        err.print("no allocation charges your tasks: nothing limits your QPU-seconds or shots")
        return
    print_allocations(out, listed, output, as_json)


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
@click.option("--exclusive", is_flag=True, help="only this lease's tasks run on RESOURCE while it lasts; waits in line "
              "for the grant")
@click.option("--wait", type=click.IntRange(0), default=0, help="with --exclusive: seconds to wait in line at most "
              "(0: the daemon's default)")
@click.option("--min-slots", type=click.IntRange(0), default=0, help="slots kept free for this lease's tasks (up to "
              "the resource's min_slots_cap)")
@click.pass_context
def acquire(ctx: click.Context, resource: str, slurm_job_id: str, ttl: int, exclusive: bool, wait: int,
            min_slots: int) -> None:
    """Take a lease on RESOURCE and print its token."""
    if wait and not exclusive:
        raise click.UsageError("--wait is for --exclusive: a shared lease is granted at once")
    with _client(ctx) as client:
        click.echo(client.acquire(resource, slurm_job_id, ttl, mode="exclusive" if exclusive else "shared",
                                  min_slots=min_slots, wait=wait).token)


@main.command()
@click.argument("token")
@click.pass_context
def release(ctx: click.Context, token: str) -> None:
    """End the lease behind TOKEN."""
    with _client(ctx) as client:
        response = client.release(token)
    err.print(f"released lease {response.lease.id}; {response.cancelled_tasks} task(s) cancelled")


LEASE_COLUMNS = (Col("ID", key=True), Col("RESOURCE", key=True), Col("OWNER", drop=2), Col("SLURM JOB"),
                 Col("MODE", drop=3), Col("MIN SLOTS", right=True, drop=4), Col("EXPIRES IN", right=True, drop=1),
                 Col("ACCOUNT", wide=True), Col("CREATED", wide=True), Col("EXPIRES", wide=True))


@main.command()
@click.option("--resource", default="", help="only this resource's leases")
@click.option("--slurm-job-id", default="", help="only this Slurm job's leases")
@output_options
@click.pass_context
def leases(ctx: click.Context, resource: str, slurm_job_id: str, output: str, as_json: bool) -> None:
    """List your live leases (their tokens are never shown)."""
    with _client(ctx) as client:
        listed = client.list_leases(resource, slurm_job_id)
    if wants_json(output, as_json):
        print_json(list(listed))
        return
    now = time.time()
    print_listing(out, LEASE_COLUMNS, [
        (lease.id, lease.resource, lease.owner, lease.slurm_job_id, _name(pb.LeaseMode, lease.mode, "LEASE_MODE_"),
         str(lease.min_slots), span(lease.expire_time.ToNanoseconds() / 1e9 - now), lease.account,
         local_time(lease.create_time), local_time(lease.expire_time)) for lease in listed],
        wide=output == "wide")


def _task_options(command: F) -> F:
    """The arguments and options ``run`` and ``submit`` share: what to run, where, and under which lease."""
    for option in reversed((
            click.argument("resource"),
            click.argument("input_path", metavar="[INPUT.json]", required=False,
                           type=click.Path(path_type=Path, dir_okay=False, allow_dash=True)),
            click.option("--qasm", "qasm_path", metavar="FILE", default=None,
                         type=click.Path(path_type=Path, dir_okay=False, exists=True),
                         help="sample this OpenQASM 3 circuit (a Sampler V2 task) instead of INPUT.json"),
            click.option("--shots", type=click.IntRange(1), default=None,
                         help=f"shots of the --qasm circuit [default: {DEFAULT_SHOTS}]"),
            click.option("--lease", "lease_token", default="", envvar="QRMI_JOB_ACQUISITION_TOKEN",
                         help="lease token [env QRMI_JOB_ACQUISITION_TOKEN]"),
            click.option("--priority", default="", metavar="CLASS",
                         help="priority class, e.g. interactive, production, low (default: the resource's)"),
            click.option("--allow-fallback", is_flag=True,
                         help="a pool may run the task on its fallback member (e.g. a simulator) while no other "
                              "member can"))):
        command = option(command)
    return command


@main.command()
@_task_options
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="write the result as the backend returned it to this file")
@click.option("--raw", is_flag=True, help="print the result as the backend returned it, not a summary")
@click.option("--detach", is_flag=True, help="print only the task id once it is queued, and return (as submit)")
@click.option("--on-interrupt", type=click.Choice(["keep", "cancel"]), default="keep", show_default=True,
              help="what Ctrl-C does to the task: leave it running, or cancel it")
@click.pass_context
def run(ctx: click.Context, resource: str, input_path: Path | None, qasm_path: Path | None, shots: int | None,
        lease_token: str, priority: str, allow_fallback: bool, output: Path | None, raw: bool, detach: bool,
        on_interrupt: str) -> None:
    """Run a task on RESOURCE, wait for it and print its result.

    INPUT.json is QRMI's task_runner input ({"program_id": "sampler"|"estimator", "parameters": {...}} or
    {"sequence": {...}, "job_runs": N}); --qasm FILE --shots N samples a circuit instead. The task id is printed
    on stderr as soon as the daemon has queued the task. Ctrl-C stops waiting and leaves the task running
    (`qrmid cancel ID` stops it), or cancels it with --on-interrupt cancel.
    """
    payload = _payload(resource, input_path, qasm_path, shots)
    with _client(ctx) as client:
        if detach:
            click.echo(_start(client, resource, payload, lease_token, priority, allow_fallback).id)
            return
        progress = _Progress()
        try:
            with err.status("starting the task") as progress.status:
                task, result = client.run(resource, payload, lease_token=lease_token, priority=priority,
                                          on_state=progress.show, allow_fallback=allow_fallback)
        except TaskFailed as exc:
            task, result = exc.task, None
        except KeyboardInterrupt:
            if progress.last is None:
                _interrupted_before_queued()
            _interrupted(ctx, client, progress.last.id, on_interrupt)
        err.print(f"task {task.id}: {_state(task)}")
        if result is None:
            raise click.ClickException(str(TaskFailed(task)))
        _emit(result, output, raw)


@main.command()
@_task_options
@click.pass_context
def submit(ctx: click.Context, resource: str, input_path: Path | None, qasm_path: Path | None, shots: int | None,
           lease_token: str, priority: str, allow_fallback: bool) -> None:
    """Queue a task on RESOURCE as `qrmid run` does, print only its id and return.

    Follow it with `qrmid watch ID`, `qrmid status ID` or `qrmid tasks`; fetch its result with `qrmid result ID`.
    """
    payload = _payload(resource, input_path, qasm_path, shots)
    with _client(ctx) as client:
        click.echo(_start(client, resource, payload, lease_token, priority, allow_fallback).id)


def _payload(resource: str, input_path: Path | None, qasm_path: Path | None, shots: int | None) -> pb.Payload:
    """The payload ``run`` and ``submit`` were given: a task_runner input file, or a circuit to sample."""
    if (input_path is None) == (qasm_path is None):
        raise click.UsageError("give INPUT.json (QRMI task_runner input) or --qasm FILE, one of them")
    if qasm_path is not None:
        circuit = qasm_path.read_text()
        return sampler_payload({"pubs": [[circuit]], "shots": shots or DEFAULT_SHOTS, "version": 2,
                                "support_qiskit": True})
    if shots is not None:
        raise click.UsageError("--shots goes with --qasm; INPUT.json states its own shots")
    assert input_path is not None
    text = sys.stdin.read() if str(input_path) == "-" else _read(input_path)
    if input_path.suffix.lower() == ".qasm" or text.lstrip().upper().startswith("OPENQASM"):
        raise click.ClickException(
            f"{input_path} is an OpenQASM circuit, but INPUT.json is QRMI task_runner JSON "
            '({"program_id": "sampler", "parameters": {"pubs": [...], "version": 2}}); to sample this circuit: '
            f"qrmid run {resource} --qasm {input_path} --shots {DEFAULT_SHOTS}")
    try:
        return payload_from_task_input(json.loads(text))
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{input_path}: not JSON ({exc}); INPUT.json is QRMI task_runner input, "
                                   '{"program_id": ..., "parameters": ...} or {"sequence": ..., "job_runs": N}') from None
    except (ValueError, AttributeError, TypeError) as exc:
        raise click.ClickException(f"{input_path}: {exc}") from None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


def _start(client: Client, resource: str, payload: pb.Payload, lease_token: str, priority: str,
           allow_fallback: bool) -> pb.Task:
    """Queue the task; a Ctrl-C before the daemon answers says how to find out whether it was queued."""
    try:
        task = client.start_task(resource, payload, lease_token=lease_token, priority=priority,
                                 allow_fallback=allow_fallback)
    except KeyboardInterrupt:
        _interrupted_before_queued()
    _warn(task)
    return task


def _warn(task: pb.Task) -> None:
    """The warnings the daemon gave when it accepted ``task`` (e.g. over a soft allocation), on stderr."""
    for warning in task.warnings:
        click.echo(f"task {task.id}: warning: {warning}", err=True)


def _interrupted_before_queued() -> NoReturn:
    click.echo("interrupted before the daemon answered: the task may have been queued; `qrmid tasks` lists "
               "yours", err=True)
    raise click.exceptions.Exit(INTERRUPTED) from None


class _Progress:
    """What ``qrmid run`` shows of its task as RunTask streams it: a line once it is accepted, then its state and
    queue position on a terminal (elsewhere, a line on each change of state before the last)."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.last: pb.Task | None = None  # the latest state streamed

    def show(self, task: pb.Task) -> None:
        previous, self.last = self.last, task  # before the line: a Ctrl-C once it is printed knows the task
        if previous is None:
            click.echo(f"task {task.id}: {_state(task)} on {task.resource}", err=True)
            _warn(task)
        elif not err.is_terminal and task.state != previous.state and task.state not in TERMINAL:
            click.echo(f"task {task.id}: {_state(task)}", err=True)
        where = f" (position {task.queue_position})" if task.queue_position else ""
        if task.HasField("estimated_start_time"):
            where += f", expected to start at {local_time(task.estimated_start_time)}"
        if self.status is not None:
            self.status.update(f"task {task.id}: {_state(task)}{where}")


def _interrupted(ctx: click.Context, client: Client, task_id: str, on_interrupt: str) -> NoReturn:
    """Ctrl-C while waiting for task ``task_id``: say that it keeps running, or cancel it; exit 130."""
    if on_interrupt == "cancel":
        task = client.stop_task(task_id)
        click.echo(f"task {task_id}: {_state(task)} (Ctrl-C)", err=True)
    else:
        click.echo(f"task {task_id} keeps running; `qrmid cancel {task_id}` stops it, `qrmid result {task_id}` "
                   "fetches its result once it completes", err=True)
    ctx.exit(INTERRUPTED)


TASK_COLUMNS = (Col("TASK", key=True), Col("RESOURCE", key=True), Col("STATE"), Col("POS", right=True),
                Col("SUBMITTED", drop=1), Col("TIME", right=True, drop=2), Col("OWNER", drop=3),
                Col("PRIORITY", drop=4), Col("REASON", drop=5), Col("ACCOUNT", wide=True),
                Col("SHOTS", right=True, wide=True), Col("STARTED", wide=True), Col("ENDED", wide=True),
                Col("EXPECTED START", wide=True), Col("SLURM JOB", wide=True), Col("MEMBER", wide=True))
STATES = ("queued", "running", "completed", "failed", "cancelled")


@main.command()
@click.option("--state", "-t", "states", multiple=True, metavar="STATE",
              help=f"only tasks in this state ({', '.join(STATES)}); repeat it or separate states by commas")
@click.option("--resource", "-r", default="", help="only this resource's tasks")
@click.option("--user", "-u", default="", help="admins: this user's tasks instead of yours")
@click.option("--all", "-a", "all_users", is_flag=True, help="admins: every user's tasks")
@click.option("--limit", "-n", type=click.IntRange(0), default=0, help="only the N most recent tasks (0: all)")
@output_options
@click.pass_context
def tasks(ctx: click.Context, states: tuple[str, ...], resource: str, user: str, all_users: bool, limit: int,
          output: str, as_json: bool) -> None:
    """List your tasks, oldest first, like `squeue --me`: every unfinished one and the finished ones the daemon
    keeps, with state, queue position, submit time and run time."""
    wanted = [state.strip().lower() for value in states for state in value.split(",") if state.strip()]
    if unknown := [state for state in wanted if state not in STATES]:
        raise click.BadParameter(f"{', '.join(unknown)}: not a task state; states are {', '.join(STATES)}",
                                 param_hint="--state")
    with _client(ctx) as client:
        listed = client.list_tasks(resource, [pb.TaskState.Value(f"TASK_STATE_{state.upper()}") for state in wanted],
                                   user, all_users, limit)
    if wants_json(output, as_json):
        print_json(listed)
        return
    now = time.time()
    rows = []
    for task in listed:
        ran = ""
        if task.HasField("start_time"):
            end = task.end_time.ToNanoseconds() / 1e9 if task.HasField("end_time") else now
            ran = span(end - task.start_time.ToNanoseconds() / 1e9)
        rows.append((task.id, task.resource, _state(task), str(task.queue_position or ""),
                     short_time(task.create_time), ran, task.owner, task.priority, task.reason, task.account,
                     str(task.shots), local_time(task.start_time), local_time(task.end_time),
                     local_time(task.estimated_start_time), task.slurm_job_id, task.member))
    print_listing(out, TASK_COLUMNS, rows, wide=output == "wide")


@main.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="print the task as JSON")
@click.pass_context
def status(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show a task's state."""
    with _client(ctx) as client:
        task = client.task(task_id)
    if as_json:
        print_json(task)
        return
    _show(task)


@main.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="print each state as one line of JSON")
@click.pass_context
def watch(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Print a task's state changes until it ends, each with the time the daemon recorded it."""
    with _client(ctx) as client:
        for task in client.watch(task_id):
            if as_json:
                click.echo(json.dumps(MessageToDict(task, preserving_proto_field_name=True)))
                continue
            where = f" position={task.queue_position}" if task.queue_position else ""
            click.echo(f"{_transition_time(task)} {task.id} {_state(task)}{where} {task.reason}".rstrip())


def _transition_time(task: pb.Task) -> str:
    """When ``task`` entered its state, by the daemon's clock: local time with its UTC offset, to the millisecond."""
    stamp = {pb.TASK_STATE_QUEUED: task.create_time, pb.TASK_STATE_RUNNING: task.start_time}.get(task.state,
                                                                                                task.end_time)
    return datetime.fromtimestamp(stamp.ToNanoseconds() / 1e9).astimezone().isoformat(timespec="milliseconds")


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
        text = client.logs(task_id)
        if not text:
            task = client.task(task_id)
            why = "its resource keeps none" if task.HasField("start_time") else \
                "it has not run yet" if task.state == pb.TASK_STATE_QUEUED else "it never ran"
            click.echo(f"task {task_id} has no logs: {why}", err=True)
    click.echo(text, nl=False)


@main.command()
@click.argument("task_id")
@click.pass_context
def cancel(ctx: click.Context, task_id: str) -> None:
    """Cancel a queued or running task."""
    with _client(ctx) as client:
        before = client.task(task_id)
        task = before if before.state in TERMINAL else client.stop_task(task_id)
    if task.state in TERMINAL and (before.state in TERMINAL or task.state != pb.TASK_STATE_CANCELLED):
        click.echo(f"task {task_id} had already ended ({_state(task)} at {local_time(task.end_time)}): nothing to "
                   "cancel", err=True)
    _show(task)


def _emit(data: bytes, output: Path | None, raw: bool) -> None:
    if output is not None:
        output.write_bytes(data)
        err.print(f"result written to {output} ({len(data)} bytes)")
    elif raw:
        sys.stdout.buffer.write(data + b"\n")
    else:
        out.print_json(json.dumps(summarize(data)))


def _show(task: pb.Task) -> None:
    """A task's fields as aligned ``name  value`` lines."""
    rows = {"id": task.id, "resource": task.resource, "state": _state(task), "owner": task.owner}
    if task.member:
        rows["member"] = task.member
    if task.queue_position:
        rows["queue position"] = str(task.queue_position)
    stamps = (("expected start", task.estimated_start_time), ("created", task.create_time),
              ("started", task.start_time), ("ended", task.end_time))
    for label, stamp in stamps:
        if stamp.seconds or stamp.nanos:
            rows[label] = stamp.ToDatetime().isoformat(timespec="milliseconds") + "Z"
    for label, value in (("priority", task.priority), ("account", task.account), ("lease", task.lease_id),
                         ("slurm job", task.slurm_job_id), ("shots", str(task.shots or "")), ("reason", task.reason),
                         ("waiting", task.wait_reason), ("warnings", "; ".join(task.warnings))):
        if value:
            rows[label] = value
    width = max(map(len, rows))
    for key, value in rows.items():
        click.echo(f"{key.ljust(width)}  {value}")


main.add_command(demo)
main.add_command(config_commands)
main.add_command(cluster_commands)
main.add_command(admin)
