"""``qrmid admin``: queues, resources, leases, drain/resume, reservations and maintenance windows, cancel/revoke,
reload, log level, accounting, the journal's quarantine, and the members of a cluster.

Built on AdminService and MetricsService over the same address and authentication as the rest of the CLI.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import click
import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from qrmid.cli_allocations import print_allocations
from qrmid.cli_output import Col, local_time, output_options, print_json, print_listing, span, wants_json
from qrmid.cli_windows import length, print_windows, summary, when
from qrmid.client_auth import ClientAuth
from qrmid.client_members import Members
from qrmid.v1 import admin_pb2 as apb
from qrmid.v1 import admin_pb2_grpc as apb_grpc
from qrmid.v1 import metrics_pb2 as mpb
from qrmid.v1 import metrics_pb2_grpc as mpb_grpc
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

out = Console()
err = Console(stderr=True)
T = TypeVar("T")
TIMES = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])
ACCOUNTING_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Stubs:
    """The services ``qrmid admin`` calls, on one channel."""

    admin: apb_grpc.AdminServiceStub
    metrics: mpb_grpc.MetricsServiceStub
    resources: pb_grpc.QuantumResourcesStub


def _call(ctx: click.Context, calls: Callable[[Stubs], Awaitable[T]]) -> T:
    """Run ``calls`` against the daemon the ``qrmid`` options name; gRPC refusals become one clear error line."""
    options = ctx.find_root().obj
    try:
        auth = ClientAuth.resolve(options["auth"], token_file=options["token_file"], tls_ca=options["tls_ca"])
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None

    async def run() -> T:
        members = Members(options["address"], auth, options=[])
        try:
            return await members.call(lambda channel, _: calls(Stubs(
                apb_grpc.AdminServiceStub(channel), mpb_grpc.MetricsServiceStub(channel),
                pb_grpc.QuantumResourcesStub(channel))), None)
        finally:
            await members.close()

    try:
        return asyncio.run(run())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except grpc.RpcError as exc:
        code = exc.code().name if exc.code() else "UNKNOWN"
        raise click.ClickException(f"{code}: {exc.details()}") from None


def _name(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


@click.group()
def admin() -> None:
    """Administer the daemon (admins only: root, or the configured admin group)."""


QUEUE_COLUMNS = (Col("TASK", key=True), Col("RESOURCE", key=True), Col("OWNER", key=True), Col("ACCOUNT", drop=3),
                 Col("PRIORITY", drop=4), Col("STATE"), Col("POS", right=True, drop=6), Col("ETA", right=True, drop=1),
                 Col("AGE", right=True, drop=2), Col("SLURM JOB", drop=5), Col("SHOTS", right=True, wide=True),
                 Col("SUBMITTED", wide=True), Col("STARTED", wide=True))


@admin.command()
@click.option("--resource", default="", help="only this resource")
@click.option("--owner", default="", help="only this user's tasks")
@output_options
@click.pass_context
def queue(ctx: click.Context, resource: str, owner: str, output: str, as_json: bool) -> None:
    """Unfinished tasks of every user, like squeue: running ones first, then queued in dispatch order."""
    listed = _call(ctx, lambda s: s.admin.ListQueues(apb.ListQueuesRequest(resource=resource, owner=owner)))
    if wants_json(output, as_json):
        print_json(list(listed.tasks))
        return
    now = time.time()
    rows = []
    for task in listed.tasks:
        eta = ""
        if task.HasField("estimated_start_time"):
            eta = span(task.estimated_start_time.ToNanoseconds() / 1e9 - now)
        rows.append((task.id, task.resource, task.owner, task.account or task.owner, task.priority,
                     _name(pb.TaskState, task.state, "TASK_STATE_"), str(task.queue_position or ""), eta,
                     span(now - task.create_time.ToNanoseconds() / 1e9), task.slurm_job_id, str(task.shots),
                     local_time(task.create_time), local_time(task.start_time)))
    print_listing(out, QUEUE_COLUMNS, rows, wide=output == "wide")


ADMIN_RESOURCE_COLUMNS = (Col("NAME", key=True), Col("TYPE", drop=1), Col("STATUS"), Col("BUSY/SLOTS", right=True),
                          Col("QUEUED", right=True), Col("BUSY %", right=True),
                          Col("DONE/FAILED/CANCELLED", right=True, drop=2), Col("QPU-S", right=True), Col("REASON", drop=3),
                          Col("SLURM", drop=4))


@admin.command()
@click.option("--window", type=click.IntRange(1), default=3600, show_default=True,
              help="seconds of history for BUSY % and task counts")
@output_options
@click.pass_context
def resources(ctx: click.Context, window: int, output: str, as_json: bool) -> None:
    """Every resource's state, slots, queue and utilization over the last WINDOW seconds, and whether Slurm holds
    the jobs asking for its license (slurm_gate)."""

    async def calls(s: Stubs) -> tuple[pb.ListResourcesResponse, mpb.GetUtilizationResponse,
                                       apb.ListSlurmGatesResponse]:
        return (await s.resources.ListResources(pb.ListResourcesRequest()),
                await s.metrics.GetUtilization(mpb.GetUtilizationRequest(window_seconds=window)),
                await s.admin.ListSlurmGates(apb.ListSlurmGatesRequest()))

    listed, used, gated = _call(ctx, calls)
    gates = {g.resource: g for g in gated.gates}
    if wants_json(output, as_json):
        doc = MessageToDict(used, preserving_proto_field_name=True)
        for entry in doc.get("resources", []):
            if (gate := gates.get(entry["resource"])) is not None:
                entry["slurm"] = MessageToDict(gate, preserving_proto_field_name=True)
        click.echo(json.dumps(doc, indent=2))
        return
    usage = {u.resource: u for u in used.resources}
    rows = []
    for r in listed.resources:
        u = usage.get(r.name, mpb.ResourceUtilization())
        rows.append((r.name, r.type, _name(pb.ResourceStatus, r.status, "RESOURCE_STATUS_"),
                     f"{r.running_tasks}/{r.capacity.slots_total}", str(r.queue_length), f"{100 * u.busy_fraction:.1f}",
                     f"{u.tasks_completed}/{u.tasks_failed}/{u.tasks_cancelled}", f"{u.qpu_seconds:.1f}",
                     r.status_reason, _gate(gates.get(r.name))))
    print_listing(out, ADMIN_RESOURCE_COLUMNS, rows, wide=output == "wide")


def _gate(gate: apb.SlurmGate | None) -> str:
    """The SLURM column: the resource's gate, e.g. "held (reservation qrmid-ibm_torino)" or "open"."""
    if gate is None:
        return ""
    text = f"held (reservation {gate.reservation})" if gate.state == "held" else gate.state
    return f"{text}: {gate.detail}" if gate.detail else text


ADMIN_LEASE_COLUMNS = (Col("ID", key=True), Col("RESOURCE", key=True), Col("OWNER", key=True), Col("SLURM JOB", drop=1),
                       Col("MODE", drop=3), Col("MIN SLOTS", right=True, drop=4), Col("EXPIRES IN", right=True, drop=2),
                       Col("ACCOUNT", wide=True), Col("CREATED", wide=True))


@admin.command()
@click.option("--resource", default="", help="only this resource's leases")
@click.option("--owner", default="", help="only this user's leases")
@output_options
@click.pass_context
def leases(ctx: click.Context, resource: str, owner: str, output: str, as_json: bool) -> None:
    """Every user's live leases (their tokens are never shown)."""
    listed = _call(ctx, lambda s: s.admin.ListAllLeases(apb.ListAllLeasesRequest(resource=resource, owner=owner)))
    if wants_json(output, as_json):
        print_json(list(listed.leases))
        return
    now = time.time()
    print_listing(out, ADMIN_LEASE_COLUMNS, [
        (lease.id, lease.resource, lease.owner, lease.slurm_job_id, _name(pb.LeaseMode, lease.mode, "LEASE_MODE_"),
         str(lease.min_slots), span(lease.expire_time.ToNanoseconds() / 1e9 - now), lease.account,
         local_time(lease.create_time)) for lease in listed.leases], wide=output == "wide")


@admin.command()
@click.argument("resource")
@click.option("--reason", default="", help="shown to users as the resource's status reason")
@click.option("--at", "at", default=None, metavar="TIME", help="plan a maintenance window from TIME instead (ISO 8601, "
              "local time without a zone, or now); needs --for")
@click.option("--for", "duration", default=None, metavar="DURATION", help="the maintenance window's length, e.g. 2h, "
              "30m, 1h30m")
@click.pass_context
def drain(ctx: click.Context, resource: str, reason: str, at: str | None, duration: str | None) -> None:
    """Stop dispatching to RESOURCE: running tasks finish, queued ones wait. With --at and --for, plan a maintenance
    window instead: no task starts that would not end before it, none inside it, and RESOURCE resumes on its own
    after it (prints the window's id)."""
    if at is None and duration is None:
        shown = _call(ctx, lambda s: s.admin.DrainResource(apb.DrainResourceRequest(resource=resource, reason=reason)))
        err.print(f"{shown.name}: {_name(pb.ResourceStatus, shown.status, 'RESOURCE_STATUS_')} ({shown.status_reason})")
        return
    if at is None or duration is None:
        raise click.UsageError("a maintenance window needs both --at TIME and --for DURATION (or neither, to drain "
                               "now until `qrmid admin resume`)")
    start = when(at, "--at")
    _create(ctx, pb.Window(resource=resource, kind="maintenance", start_time=_stamp(start),
                           end_time=_stamp(start + length(duration, "--for")), reason=reason))


@admin.command()
@click.argument("resource")
@click.option("--start", default="now", show_default=True, metavar="TIME", help="ISO 8601 (local time without a "
              "zone), now, or now+DURATION")
@click.option("--end", default=None, metavar="TIME", help="when it ends (or give --for)")
@click.option("--for", "duration", default=None, metavar="DURATION", help="its length instead of --end, e.g. 2h")
@click.option("--accounts", default="", metavar="A,B", help="the accounts (Slurm accounts, else user names) it is for")
@click.option("--users", default="", metavar="U,V", help="the users it is for")
@click.option("--groups", default="", metavar="G,H", help="the Unix groups whose members it is for")
@click.option("--reason", default="", help="shown to users whose tasks wait")
@click.pass_context
def reserve(ctx: click.Context, resource: str, start: str, end: str | None, duration: str | None, accounts: str,
            users: str, groups: str, reason: str) -> None:
    """Reserve RESOURCE from --start to --end for some accounts, users or groups: inside the window only their
    tasks start, the others wait until it ends. Prints the reservation's id."""
    if (end is None) == (duration is None):
        raise click.UsageError("give the reservation's end: --end TIME or --for DURATION (one of them)")
    begins = when(start, "--start")
    ends = when(end, "--end") if end is not None else begins + length(duration or "", "--for")
    _create(ctx, pb.Window(resource=resource, kind="reservation", start_time=_stamp(begins), end_time=_stamp(ends),
                           accounts=_listed(accounts), users=_listed(users), groups=_listed(groups), reason=reason))


def _listed(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _create(ctx: click.Context, window: pb.Window) -> None:
    """Create ``window``; its id on stdout, what it is on stderr."""
    made = _call(ctx, lambda s: s.admin.CreateWindow(apb.CreateWindowRequest(window=window)))
    click.echo(made.id)
    err.print(f"{made.resource}: {summary(made)}", soft_wrap=True)


@admin.command("windows")
@click.option("--resource", default="", help="only this resource's windows")
@output_options
@click.pass_context
def windows(ctx: click.Context, resource: str, output: str, as_json: bool) -> None:
    """Reservations and maintenance windows not yet closed, soonest first, with the backends' own reservations."""
    listed = _call(ctx, lambda s: s.admin.ListWindows(apb.ListWindowsRequest(resource=resource)))
    print_windows(out, listed.windows, output, as_json)


admin.add_command(windows, "reservations")


@admin.command()
@click.argument("window_id")
@click.pass_context
def unreserve(ctx: click.Context, window_id: str) -> None:
    """Delete a reservation or maintenance window an admin created, by its id."""
    gone = _call(ctx, lambda s: s.admin.DeleteWindow(apb.DeleteWindowRequest(id=window_id)))
    err.print(f"{gone.resource}: {summary(gone)} deleted", soft_wrap=True)


@admin.command()
@click.argument("resource")
@click.pass_context
def resume(ctx: click.Context, resource: str) -> None:
    """Resume dispatching to a drained RESOURCE."""
    shown = _call(ctx, lambda s: s.admin.ResumeResource(apb.ResumeResourceRequest(resource=resource)))
    err.print(f"{shown.name}: {_name(pb.ResourceStatus, shown.status, 'RESOURCE_STATUS_')}")


@admin.command()
@click.argument("task_id")
@click.option("--reason", default="", help="recorded as the task's reason")
@click.pass_context
def cancel(ctx: click.Context, task_id: str, reason: str) -> None:
    """Cancel any user's task."""
    task = _call(ctx, lambda s: s.admin.CancelTask(apb.CancelTaskRequest(task_id=task_id, reason=reason)))
    err.print(f"task {task.id} of {task.owner}: {_name(pb.TaskState, task.state, 'TASK_STATE_')}")


@admin.command()
@click.argument("lease_id")
@click.option("--reason", default="", help="recorded as the reason of the tasks it cancels")
@click.pass_context
def revoke(ctx: click.Context, lease_id: str, reason: str) -> None:
    """End any user's lease by its id; by policy its unfinished tasks are cancelled."""
    ended = _call(ctx, lambda s: s.admin.RevokeLease(apb.RevokeLeaseRequest(lease_id=lease_id, reason=reason)))
    err.print(f"revoked lease {ended.lease.id} of {ended.lease.owner}; {ended.cancelled_tasks} task(s) cancelled")


@admin.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Re-read the daemon's config file without dropping tasks."""
    changes = _call(ctx, lambda s: s.admin.ReloadConfig(apb.ReloadConfigRequest()))
    for label, names in (("added", changes.added), ("removed", changes.removed), ("changed", changes.changed)):
        err.print(f"{label}: {', '.join(names) or '-'}")


QUARANTINE_COLUMNS = (Col("ID", key=True, right=True), Col("TABLE"), Col("ROW", key=True, right=True),
                      Col("KEY", key=True), Col("QUARANTINED"), Col("REASON"))


@admin.command()
@output_options
@click.pass_context
def quarantine(ctx: click.Context, output: str, as_json: bool) -> None:
    """Stored rows (journal or PostgreSQL) that could not be read at start-up, set aside in a quarantine table."""
    listed = _call(ctx, lambda s: s.admin.ListQuarantine(apb.ListQuarantineRequest()))
    if wants_json(output, as_json):
        print_json(listed)
        return
    print_listing(out, QUARANTINE_COLUMNS, [
        (str(row.id), row.source, str(row.row_id), row.key, local_time(row.quarantine_time), row.reason)
        for row in listed.rows], wide=output == "wide")
    err.print(f"{len(listed.rows)} quarantined row(s) in {listed.journal}; each raw row stays in its table "
              "`quarantine` (column raw, JSON)")


MEMBER_COLUMNS = (Col("MEMBER", key=True), Col("HEALTH"), Col("LAST HEARTBEAT", right=True), Col("STARTED", drop=1),
                  Col("DISPATCHES"))


@admin.command()
@output_options
@click.pass_context
def cluster(ctx: click.Context, output: str, as_json: bool) -> None:
    """The members of the daemon's cluster, their health and the resources each dispatches."""
    listed = _call(ctx, lambda s: s.admin.ListMembers(apb.ListMembersRequest()))
    if wants_json(output, as_json):
        print_json(listed)
        return
    now = time.time()
    rows = []
    for member in listed.members:
        health = "healthy" if member.healthy else "no heartbeat"
        rows.append((f"{member.name} *" if member.name == listed.member else member.name,
                     f"{health}, handing over" if member.handing_over else health,
                     f"{span(now - member.heartbeat_time.ToNanoseconds() / 1e9)} ago", local_time(member.start_time),
                     ", ".join(member.dispatches)))
    print_listing(out, MEMBER_COLUMNS, rows, wide=output == "wide")
    err.print(f"{len(listed.members)} member(s); * the member that answered", soft_wrap=True)


@admin.command()
@click.argument("member")
@click.option("--back", is_flag=True, help="let MEMBER take resources again")
@click.pass_context
def handover(ctx: click.Context, member: str, back: bool) -> None:
    """Tell MEMBER to hand over the resources it dispatches to the other members and take none until it
    restarts (or, with --back, to take resources again)."""
    shown = _call(ctx, lambda s: s.admin.Handover(apb.HandoverRequest(member=member, back=back)))
    if back:
        err.print(f"{shown.name}: takes resources again", soft_wrap=True)
        return
    now = f" (now: {', '.join(shown.dispatches)})" if shown.dispatches else ""
    err.print(f"{shown.name}: hands over its resources{now} to the other members and takes none until it restarts "
              f"or `qrmid admin handover {shown.name} --back`", soft_wrap=True)


@admin.command("log-level")
@click.argument("level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.pass_context
def log_level(ctx: click.Context, level: str) -> None:
    """Change the daemon's log level at run time."""
    changed = _call(ctx, lambda s: s.admin.SetLogLevel(apb.SetLogLevelRequest(level=level.lower())))
    err.print(f"log level {level.lower()} (was {changed.previous})")


@admin.command()
@click.option("--since", type=TIMES, default=None, help="tasks that ended at or after this local time")
@click.option("--until", type=TIMES, default=None, help="tasks that ended before this local time")
@click.option("--by", "group", type=click.Choice(["user", "account", "resource"]), default="user",
              show_default=True, help="what to total by")
@click.option("--resource", default="", help="only this resource")
@click.option("--owner", default="", help="only this user")
@click.option("--account", default="", help="only this account")
@output_options
@click.pass_context
def accounting(ctx: click.Context, since: datetime | None, until: datetime | None, group: str, resource: str,
               owner: str, account: str, output: str, as_json: bool) -> None:
    """Tasks, shots and QPU-seconds of finished tasks, totalled per user, account or resource."""
    request = mpb.ListAccountingRequest(resource=resource, owner=owner, account=account, page_size=ACCOUNTING_PAGE)
    if since is not None:
        request.start_time.CopyFrom(_stamp(since.timestamp()))
    if until is not None:
        request.end_time.CopyFrom(_stamp(until.timestamp()))

    async def calls(s: Stubs) -> list[mpb.AccountingRecord]:
        records: list[mpb.AccountingRecord] = []
        while True:
            page = await s.metrics.ListAccounting(request)
            records.extend(page.records)
            if not page.next_page_token:
                return records
            request.page_token = page.next_page_token

    key = {"user": "owner", "account": "account", "resource": "resource"}[group]
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"tasks": 0, "completed": 0, "shots": 0,
                                                               "qpu_seconds": 0.0})
    for record in _call(ctx, calls):
        total = totals[getattr(record, key)]
        total["tasks"] += 1
        total["completed"] += record.state == pb.TASK_STATE_COMPLETED
        total["shots"] += record.shots
        total["qpu_seconds"] += record.qpu_seconds
    if wants_json(output, as_json):
        click.echo(json.dumps({name: totals[name] for name in sorted(totals)}, indent=2))
        return
    columns = (Col(group.upper(), key=True), Col("TASKS", right=True), Col("COMPLETED", right=True),
               Col("SHOTS", right=True), Col("QPU-SECONDS", right=True))
    print_listing(out, columns, [
        (name, str(total["tasks"]), str(total["completed"]), str(total["shots"]), f"{total['qpu_seconds']:.3f}")
        for name, total in sorted(totals.items())], wide=output == "wide")


@admin.group()
def allocation() -> None:
    """Budgets of QPU-seconds and shots per account and period (hard: StartTask refused over it; soft: tasks run
    in the lowest priority class)."""


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


@allocation.command("set")
@click.argument("account")
@click.option("--resources", default="", metavar="A,B", help="the resources it charges (default: every resource)")
@click.option("--qpu-seconds", type=float, default=0.0, help="QPU-seconds per period")
@click.option("--shots", type=click.IntRange(0), default=0, help="shots per period")
@click.option("--period", default="month", show_default=True, help="day, week, month, year or none (never resets)")
@click.option("--soft", is_flag=True, help="over it, tasks run in the lowest priority class instead of being refused")
@output_options
@click.pass_context
def allocation_set(ctx: click.Context, account: str, resources: str, qpu_seconds: float, shots: int, period: str,
                   soft: bool, output: str, as_json: bool) -> None:
    """Set ACCOUNT's allocation (a Slurm account, or a user name) on RESOURCES, replacing the one set on the same
    resources."""
    asked = pb.Allocation(account=account, resources=_names(resources), limit="soft" if soft else "hard",
                          qpu_seconds=qpu_seconds, shots=shots, period=period)
    answer = _call(ctx, lambda s: s.admin.SetAllocation(apb.SetAllocationRequest(allocation=asked)))
    print_allocations(out, [answer], output, as_json)


@allocation.command("show")
@click.argument("account", default="")
@output_options
@click.pass_context
def allocation_show(ctx: click.Context, account: str, output: str, as_json: bool) -> None:
    """Every allocation (or ACCOUNT's) with what is used in the current period and when it resets."""
    listed = _call(ctx, lambda s: s.admin.ListAllocations(apb.ListAllocationsRequest(account=account)))
    print_allocations(out, listed.allocations, output, as_json)


@allocation.command("delete")
@click.argument("account")
@click.option("--resources", default="", metavar="A,B", help="the resources, as set (default: every resource)")
@click.pass_context
def allocation_delete(ctx: click.Context, account: str, resources: str) -> None:
    """Delete ACCOUNT's allocation on RESOURCES."""
    gone = _call(ctx, lambda s: s.admin.DeleteAllocation(apb.DeleteAllocationRequest(account=account,
                                                                                      resources=_names(resources))))
    err.print(f"allocation of {gone.account} on {','.join(gone.resources) or 'every resource'} deleted")
