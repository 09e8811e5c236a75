"""Allocations against real daemons over real gRPC: hard budgets refuse StartTask (naming the allocation, what is
left and when it resets), also when a task's estimate is over what is left and when 100 StartTasks race; soft budgets
accept in the lowest class with a warning; usage in the journal counts after a restart; periods reset at local
midnight; admins set, show and delete allocations; users see their own; bad input is refused with what to fix."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner, Result
from cluster import Cluster
from daemons import ROOT, config, running, serving, short_dir, write_config
from postgres import Database
from test_authz import tokens_file
from test_postgres_store import password_file

from qrmid import cli
from qrmid.backends.payloads import PulserSequence
from qrmid.client import AsyncClient, Client, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.core.allocations import Allocations, Used, allocation, period_bounds
from qrmid.core.errors import ResourceExhausted
from qrmid.core.events import Events, Listener
from qrmid.core.tasks import Task, TaskState
from qrmid.ops.config import Config
from qrmid.store.journal import Journal
from qrmid.store.postgres import PostgresStore
from qrmid.v1 import admin_pb2 as admin_pb
from qrmid.v1 import admin_pb2_grpc as admin_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

SEQUENCE = {"version": "1"}
RESOURCES = [{"type": "noop", "name": "fast", "slots": 4},
             {"type": "noop", "name": "slow", "slots": 1, "delay_seconds": 0.4}]


def shots(count: int) -> pb.Payload:
    return pulser_payload(SEQUENCE, count)


def budget(account: str, limit: str = "hard", resources: tuple[str, ...] = (), qpu_seconds: float = 0,
           count: int = 0, period: str = "month") -> admin_pb.SetAllocationRequest:
    return admin_pb.SetAllocationRequest(allocation=pb.Allocation(
        account=account, resources=resources, limit=limit, qpu_seconds=qpu_seconds, shots=count, period=period))


def local(seconds: float) -> str:
    """``seconds`` as the daemon writes a reset time: local time with its UTC offset."""
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


async def failure(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value.code(), error.value.details() or ""


async def until_state(client: AsyncClient, task_id: str, state: int, timeout: float = 30) -> pb.Task:
    deadline = time.monotonic() + timeout
    while (task := await client.task(task_id)).state != state:
        assert time.monotonic() < deadline, f"task {task_id} is still {task.state}"
        await asyncio.sleep(0.02)
    return task


@dataclass
class Site:
    """A daemon with an admin (ops) and two users (alice, bob), over real gRPC with tokens."""

    cfg: Config
    ops: admin_grpc.AdminServiceStub
    alice: AsyncClient
    bob: AsyncClient
    alice_admin: admin_grpc.AdminServiceStub  # alice, who is no admin, on the admin service


@asynccontextmanager
async def site_of(cfg: Config, secrets: dict[str, str]) -> AsyncIterator[Site]:
    async with running(cfg) as daemon:
        address = f"unix:{daemon.socket}"
        channels = [ClientAuth("token", token=secrets[name]).channel(address, options=[]) for name in ("ops", "alice")]
        clients = [AsyncClient(address, auth=ClientAuth("token", token=secrets[name])) for name in ("alice", "bob")]
        try:
            yield Site(cfg, admin_grpc.AdminServiceStub(channels[0]), clients[0], clients[1],
                       admin_grpc.AdminServiceStub(channels[1]))
        finally:
            for client in clients:
                await client.close()
            for channel in channels:
                await channel.close()


@pytest.fixture
def secrets() -> dict[str, str]:
    path, tokens = tokens_file({"alice": False, "bob": False, "ops": True})
    tokens["file"] = str(path)
    return tokens


@pytest.fixture
def site_config(secrets: dict[str, str]) -> Config:
    return config(RESOURCES, daemon={"auth": "token"}, auth={"tokens_file": secrets["file"]})


@pytest.fixture
async def site(site_config: Config, secrets: dict[str, str]) -> AsyncIterator[Site]:
    async with site_of(site_config, secrets) as found:
        yield found


# -- hard limits -----------------------------------------------------------------------------------------------


async def test_a_hard_shot_budget_refuses_tasks_past_it_naming_the_allocation_what_is_left_and_the_reset(
        site: Site) -> None:
    await site.ops.SetAllocation(budget("alice", resources=("fast",), count=100))
    first = await site.alice.start_task("fast", shots(60))
    await until_state(site.alice, first.id, pb.TASK_STATE_COMPLETED)
    code, message = await failure(site.alice.start_task("fast", shots(60)))
    reset = local(period_bounds("month", time.time())[1] or 0)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message == (f"the hard allocation of account 'alice' on resource fast (100 shots a month) has 40 shots left "
                       f"(60 used) and the task asks for 60; it resets at {reset}; StartTask is refused until then "
                       "(`qrmid allocation` shows what is left; an admin may raise it)")
    assert (await site.alice.start_task("slow", shots(60))).state == pb.TASK_STATE_QUEUED, "other resources are free"
    assert (await site.bob.start_task("fast", shots(60))).state == pb.TASK_STATE_QUEUED, "other accounts are free"
    last = await site.alice.start_task("fast", shots(40))
    await until_state(site.alice, last.id, pb.TASK_STATE_COMPLETED)
    code, message = await failure(site.alice.start_task("fast", shots(1)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "has 0 shots left (100 used)" in message
    [shown] = (await site.ops.ListAllocations(admin_pb.ListAllocationsRequest(account="alice"))).allocations
    assert (shown.used_shots, shown.shots, shown.limit, shown.period) == (100, 100, "hard", "month")
    assert shown.reset_time.seconds == int(period_bounds("month", time.time())[1] or 0)


async def test_a_hundred_parallel_start_tasks_never_pass_a_hard_shot_budget(site: Site) -> None:
    await site.ops.SetAllocation(budget("alice", count=250))
    answers = await asyncio.gather(*(site.alice.start_task("fast", shots(10)) for _ in range(100)),
                                   return_exceptions=True)
    accepted = [answer for answer in answers if isinstance(answer, pb.Task)]
    refused = [answer for answer in answers if not isinstance(answer, pb.Task)]
    assert len(accepted) == 25, "unfinished tasks hold their shots: exactly the budget is taken"
    assert all(isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
               for error in refused)
    for task in accepted:
        await until_state(site.alice, task.id, pb.TASK_STATE_COMPLETED)
    [shown] = (await site.ops.ListAllocations(admin_pb.ListAllocationsRequest())).allocations
    assert shown.used_shots == 250


async def test_a_hard_qpu_second_budget_refuses_a_task_whose_estimate_is_over_what_is_left(site: Site) -> None:
    await site.ops.SetAllocation(budget("alice", resources=("slow",), qpu_seconds=3600, period="day"))
    first = await site.alice.start_task("slow", shots(1))
    done = await until_state(site.alice, first.id, pb.TASK_STATE_COMPLETED)
    ran = (done.end_time.ToNanoseconds() - done.start_time.ToNanoseconds()) / 1e9
    assert ran >= 0.4
    [shown] = (await site.ops.ListAllocations(admin_pb.ListAllocationsRequest())).allocations
    used = shown.used_qpu_seconds
    assert used == pytest.approx(ran, abs=1e-3), "charged from its start to its end"
    granted = round(used * 1.5, 3)  # half a run left: less than the next task's estimate (the run time so far)
    await site.ops.SetAllocation(budget("alice", resources=("slow",), qpu_seconds=granted, period="day"))
    code, message = await failure(site.alice.start_task("slow", shots(1)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (f"the hard allocation of account 'alice' on resource slow ({granted:g} QPU-seconds a day) has "
            f"{granted - used:.1f} QPU-seconds left ({used:.1f} used) and the task is estimated at {used:.1f} (the "
            f"resource's recent run time); it resets at {local(period_bounds('day', time.time())[1] or 0)}") in message
    assert (await site.bob.start_task("slow", shots(1))).state == pb.TASK_STATE_QUEUED


# -- soft limits -----------------------------------------------------------------------------------------------


async def test_a_soft_budget_accepts_tasks_past_it_in_the_lowest_class_with_a_warning(site: Site) -> None:
    await site.ops.SetAllocation(budget("alice", "soft", resources=("fast",), count=50))
    within = await site.alice.start_task("fast", shots(50))
    assert (within.priority, list(within.warnings), within.wait_reason) == ("production", [], "")
    await until_state(site.alice, within.id, pb.TASK_STATE_COMPLETED)
    await site.ops.DrainResource(admin_pb.DrainResourceRequest(resource="fast", reason="for the test"))
    over = await site.alice.start_task("fast", shots(5), priority="interactive")
    assert over.state == pb.TASK_STATE_QUEUED and over.priority == "low"
    [warning] = over.warnings
    assert warning.startswith("the soft allocation of account 'alice' on resource fast (50 shots a month) has 0 "
                              "shots left (50 used) and the task asks for 5; it resets at ")
    assert warning.endswith(": the task was queued in the lowest priority class")
    shown = await site.alice.task(over.id)
    assert (shown.wait_reason, list(shown.warnings), shown.priority) == (warning, [warning], "low")
    bob = await site.bob.start_task("fast", shots(5))
    assert (bob.priority, list(bob.warnings)) == ("production", [])
    await site.ops.ResumeResource(admin_pb.ResumeResourceRequest(resource="fast"))
    done = await until_state(site.alice, over.id, pb.TASK_STATE_COMPLETED)
    assert done.wait_reason == "" and list(done.warnings) == [warning]
    [listed] = (await site.alice.my_allocations())
    assert (listed.used_shots, listed.limit) == (55, "soft")


async def test_a_soft_qpu_second_budget_used_up_sends_tasks_to_the_lowest_class(site: Site) -> None:
    await site.ops.SetAllocation(budget("alice", "soft", resources=("slow",), qpu_seconds=0.1, period="week"))
    first = await site.alice.start_task("slow", shots(1))
    assert first.priority == "production", "nothing used yet, and no run time to estimate by"
    await until_state(site.alice, first.id, pb.TASK_STATE_COMPLETED)
    [shown] = (await site.ops.ListAllocations(admin_pb.ListAllocationsRequest())).allocations
    low = await site.alice.start_task("slow", shots(1), priority="production")
    assert low.priority == "low"
    warning = (f"the soft allocation of account 'alice' on resource slow (0.1 QPU-seconds a week) has 0.0 QPU-seconds "
               f"left ({shown.used_qpu_seconds:.1f} used) and the task is estimated at {shown.used_qpu_seconds:.1f} (the "
               f"resource's recent run time); it resets at {local(period_bounds('week', time.time())[1] or 0)}: the "
               "task was queued in the lowest priority class")
    assert list(low.warnings) == [warning]


# -- restarts and periods --------------------------------------------------------------------------------------


async def test_usage_in_the_journal_counts_after_a_restart(site_config: Config, secrets: dict[str, str]) -> None:
    async with site_of(site_config, secrets) as site:
        await site.ops.SetAllocation(budget("alice", count=30))
        await site.ops.SetAllocation(budget("alice", "soft", resources=("slow",), qpu_seconds=100, period="year"))
        await until_state(site.alice, (await site.alice.start_task("fast", shots(20))).id, pb.TASK_STATE_COMPLETED)
        ran = await until_state(site.alice, (await site.alice.start_task("slow", shots(5))).id,
                                pb.TASK_STATE_COMPLETED)
        before = (await site.ops.ListAllocations(admin_pb.ListAllocationsRequest())).allocations
    async with site_of(site_config, secrets) as site:
        after = (await site.ops.ListAllocations(admin_pb.ListAllocationsRequest())).allocations
        assert list(after) == list(before)
        assert [(a.resources, a.used_shots) for a in after] == [([], 25), (["slow"], 5)]
        seconds = (ran.end_time.ToNanoseconds() - ran.start_time.ToNanoseconds()) / 1e9
        assert after[1].used_qpu_seconds == pytest.approx(seconds, abs=1e-3)
        code, message = await failure(site.alice.start_task("fast", shots(6)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "has 5 shots left (25 used)" in message
        assert (await site.alice.start_task("fast", shots(5))).state == pb.TASK_STATE_QUEUED


async def test_unfinished_tasks_hold_their_shots_across_a_restart(site_config: Config,
                                                                  secrets: dict[str, str]) -> None:
    async with site_of(site_config, secrets) as site:
        await site.ops.SetAllocation(budget("alice", count=30))
        await site.ops.DrainResource(admin_pb.DrainResourceRequest(resource="fast"))
        await site.alice.start_task("fast", shots(20))
    async with site_of(site_config, secrets) as site:
        code, message = await failure(site.alice.start_task("fast", shots(11)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "has 10 shots left (0 used, 20 shots held by unfinished tasks)" in message


async def test_a_task_queued_low_over_a_soft_allocation_keeps_its_warning_across_a_restart(
        site_config: Config, secrets: dict[str, str]) -> None:
    async with site_of(site_config, secrets) as site:
        await site.ops.SetAllocation(budget("alice", "soft", count=10))
        await site.ops.DrainResource(admin_pb.DrainResourceRequest(resource="fast"))
        low = await site.alice.start_task("fast", shots(20))
        assert low.priority == "low" and len(low.warnings) == 1
    async with site_of(site_config, secrets) as site:
        again = await site.alice.task(low.id)
        assert (again.priority, list(again.warnings), again.wait_reason) == ("low", list(low.warnings),
                                                                             low.warnings[0])


def test_usage_recorded_before_a_sigkill_counts_after_the_restart() -> None:
    scratch = short_dir()
    cfg = write_config(scratch / "qrmid.toml", f'[daemon]\nsocket = "{scratch / "q.sock"}"\nshutdown_grace_seconds = 1\n'
                       f'[journal]\npath = "{scratch / "journal.db"}"\n'
                       '[[resources]]\ntype = "noop"\nname = "fast"\nslots = 2\n'
                       '[[resources]]\ntype = "noop"\nname = "stuck"\nslots = 1\ndelay_seconds = 3600\n')
    address = f"unix:{scratch / 'q.sock'}"
    with serving(cfg, address) as process, Client(address) as client:
        set_allocation(address, getuser(), "--shots", "100", "--period", "year")
        client.wait(client.start_task("fast", shots(30)).id, timeout=30)
        running = client.start_task("stuck", shots(50))  # accepted (journaled), then running when the daemon dies
        process.kill()
        process.wait()
    with serving(cfg, address), Client(address) as client:
        [shown] = show(address)
        assert (shown["account"], shown["used_shots"]) == (getuser(), "30")
        with pytest.raises(grpc.RpcError) as refused:
            client.start_task("fast", shots(21))
        assert "has 20 shots left (30 used, 50 shots held by unfinished tasks)" in (refused.value.details() or "")
        assert client.task(running.id).state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING)


def test_usage_starts_again_from_zero_when_a_period_ends() -> None:
    now = [datetime(2026, 3, 31, 23, 59, 50).timestamp()]
    book = Allocations(Events(), clock=lambda: now[0])
    book.take(allocation("alice", [], "hard", 0, 100, "day", []))
    book.take(allocation("alice", ["r"], "soft", 0, 150, "month", ["r"]))
    task = Task(resource="r", owner="alice", payload=PulserSequence(sequence="{}", job_runs=100), shots=100)
    book.task_queued(task)
    task.transition(TaskState.RUNNING)
    task.transition(TaskState.COMPLETED)
    book.task_changed(task)
    with pytest.raises(ResourceExhausted, match=r"has 0 shots left \(100 used\).* it resets at 2026-04-01T00:00:00"):
        book.admit("alice", "r", 1)
    assert book.admit("bob", "r", 1) == ()
    now[0] += 11  # April: the day and the month begin again
    assert [(view.used_shots, view.reset_at) for view in book.views()] == [
        (0, datetime(2026, 4, 2).timestamp()), (0, datetime(2026, 5, 1).timestamp())]
    assert book.admit("alice", "r", 100) == ()
    assert (period_bounds("week", now[0])[0], period_bounds("year", now[0])[0]) == (
        datetime(2026, 3, 30).timestamp(), datetime(2026, 1, 1).timestamp())
    assert period_bounds("none", now[0]) == (float("-inf"), None)


def _tz_with_midnight_in(seconds: float) -> tuple[str, timezone]:
    """A POSIX TZ value whose local midnight comes ``seconds`` from now, and that zone."""
    offset = round(-(time.time() + seconds)) % 86_400
    if offset > 43_200:
        offset -= 86_400
    sign, size = ("-" if offset >= 0 else "+"), abs(offset)  # POSIX: the offset west of UTC
    return f"QRM{sign}{size // 3600}:{size % 3600 // 60:02d}:{size % 60:02d}", timezone(timedelta(seconds=offset))


def test_a_daily_budget_resets_at_the_daemons_local_midnight() -> None:
    scratch = short_dir()
    tz, zone = _tz_with_midnight_in(20)
    cfg = write_config(scratch / "qrmid.toml", f'[daemon]\nsocket = "{scratch / "q.sock"}"\n'
                       f'[journal]\npath = "{scratch / "journal.db"}"\n'
                       '[[resources]]\ntype = "noop"\nname = "fast"\nslots = 2\n')
    address = f"unix:{scratch / 'q.sock'}"
    with serving(cfg, address, env={"TZ": tz}), Client(address) as client:
        set_allocation(address, getuser(), "--shots", "10", "--period", "day")
        shown = show(address)
        midnight = datetime.fromisoformat(shown[0]["reset_time"]).astimezone(zone)
        assert (midnight.hour, midnight.minute, midnight.second) == (0, 0, 0)
        assert 5 < midnight.timestamp() - time.time() <= 21
        task = client.start_task("fast", shots(10))
        client.wait(task.id, timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            client.start_task("fast", shots(1))
        assert f"it resets at {midnight.isoformat(timespec='seconds')}" in (refused.value.details() or "")
        time.sleep(max(midnight.timestamp() - time.time(), 0) + 0.2)
        assert show(address, getuser())[0].get("used_shots", 0) == 0
        assert client.start_task("fast", shots(10)).state == pb.TASK_STATE_QUEUED


# -- the command line ------------------------------------------------------------------------------------------


def getuser() -> str:
    return getpass.getuser()


def qrmid(address: str, *args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli.main, ["--address", address, *args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def set_allocation(address: str, *args: str, ok: bool = True) -> Result:
    return qrmid(address, "admin", "allocation", "set", *args, ok=ok)


def show(address: str, *account: str) -> Any:
    return json.loads(qrmid(address, "admin", "allocation", "show", *account, "--json").output)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, dict[str, str]]]:
    path, secrets = tokens_file({"alice": False, "bob": False, "ops": True})
    scratch = short_dir()
    cfg = write_config(scratch / "qrmid.toml", f'[daemon]\nsocket = "{scratch / "q.sock"}"\nauth = "token"\n'
                       f'[auth]\ntokens_file = "{path}"\n[journal]\npath = "{scratch / "journal.db"}"\n'
                       '[[resources]]\ntype = "noop"\nname = "ibm_a"\n[[resources]]\ntype = "noop"\nname = "ibm_b"\n'
                       '[[resources]]\ntype = "noop"\nname = "a_resource_with_a_rather_long_name_indeed"\n')
    for name, token in secrets.items():
        (scratch / name).write_text(token)
        (scratch / name).chmod(0o600)
        secrets[name] = str(scratch / name)
    address = f"unix:{scratch / 'q.sock'}"
    with serving(cfg, address):
        yield address, secrets


def as_user(served: tuple[str, dict[str, str]], user: str, *args: str, ok: bool = True) -> Result:
    address, files = served
    result = CliRunner().invoke(cli.main, ["--address", address, "--auth", "token", "--token-file", files[user], *args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_admins_set_show_and_delete_allocations(served: tuple[str, dict[str, str]]) -> None:
    long = "a_resource_with_a_rather_long_name_indeed"
    made = as_user(served, "ops", "admin", "allocation", "set", "physics-students", "--resources", f"ibm_b,{long}",
                   "--qpu-seconds", "3600", "--json")
    assert json.loads(made.output) == [{"account": "physics-students", "resources": [long, "ibm_b"], "limit": "hard",
                                        "qpu_seconds": 3600.0, "period": "month",
                                        "reset_time": json.loads(made.output)[0]["reset_time"]}]
    as_user(served, "ops", "admin", "allocation", "set", "physics-staff", "--resources", "ibm_a,ibm_b", "--shots",
            "100000", "--period", "week", "--soft")
    listed = json.loads(as_user(served, "ops", "admin", "allocation", "show", "--json").output)
    assert [(a["account"], a["resources"], a["limit"], a["period"]) for a in listed] == [
        ("physics-staff", ["ibm_a", "ibm_b"], "soft", "week"), ("physics-students", [long, "ibm_b"], "hard", "month")]
    table = as_user(served, "ops", "admin", "allocation", "show").output
    assert f"physics-students  {long},ibm_b" in table and "0.0/3600" in table and "0/100000" in table
    one = json.loads(as_user(served, "ops", "admin", "allocation", "show", "physics-staff", "--json").output)
    assert [a["account"] for a in one] == ["physics-staff"]
    gone = as_user(served, "ops", "admin", "allocation", "delete", "physics-staff", "--resources", "ibm_b,ibm_a")
    assert "allocation of physics-staff on ibm_a,ibm_b deleted" in gone.output
    again = as_user(served, "ops", "admin", "allocation", "delete", "physics-staff", "--resources", "ibm_a", ok=False)
    assert "NOT_FOUND: account 'physics-staff' has no allocation on resource ibm_a (it has none)" in again.output
    as_user(served, "ops", "admin", "allocation", "delete", "physics-students", "--resources", f"{long},ibm_b")
    assert json.loads(as_user(served, "ops", "admin", "allocation", "show", "--json").output) == []


def test_users_see_their_own_allocations_and_no_admin_calls(served: tuple[str, dict[str, str]]) -> None:
    as_user(served, "ops", "admin", "allocation", "set", "alice", "--shots", "500", "--period", "day")
    as_user(served, "ops", "admin", "allocation", "set", "bob", "--qpu-seconds", "60")
    try:
        mine = json.loads(as_user(served, "alice", "allocation", "--json").output)
        assert [(a["account"], a["shots"], a["period"]) for a in mine] == [("alice", "500", "day")]
        assert "alice" in as_user(served, "alice", "allocation").output
        denied = as_user(served, "alice", "admin", "allocation", "show", ok=False)
        assert "PERMISSION_DENIED: ListAllocations requires an admin" in denied.output
        assert "no allocation charges your tasks" in as_user(served, "ops", "allocation").output
    finally:
        for account in ("alice", "bob"):
            as_user(served, "ops", "admin", "allocation", "delete", account)


def test_a_task_over_a_soft_allocation_says_so_when_submitted_and_in_its_status(
        served: tuple[str, dict[str, str]]) -> None:
    as_user(served, "ops", "admin", "allocation", "set", "alice", "--resources", "ibm_a", "--shots", "50", "--soft")
    try:
        submitted = as_user(served, "alice", "submit", "ibm_a", str(ROOT / "qrmid/examples/pulser.json"))
        warning = ("the soft allocation of account 'alice' on resource ibm_a (50 shots a month) has 50 shots left (0 "
                   "used) and the task asks for 100; it resets at ")
        task_id = submitted.stdout.strip().splitlines()[-1]
        assert f"task {task_id}: warning: {warning}" in submitted.stderr
        status = as_user(served, "alice", "status", task_id).stdout
        assert re.search(r"^priority +low$", status, re.MULTILINE)
        assert re.search(rf"^warnings +{re.escape(warning)}", status, re.MULTILINE)
    finally:
        as_user(served, "ops", "admin", "allocation", "delete", "alice", "--resources", "ibm_a")


@pytest.mark.parametrize(("args", "expected"), [
    (("--qpu-seconds", "-5"), "INVALID_ARGUMENT: allocation.qpu_seconds is -5.0; give a budget from 0 (none) to 1e+12"),
    (("--shots", "5", "--period", "fortnight"), "INVALID_ARGUMENT: allocation.period 'fortnight' is not one of: day"),
    ((), "INVALID_ARGUMENT: the allocation has no budget: give qpu_seconds, shots, or both (above 0)"),
    (("--shots", "5", "--resources", "ibm_a,ibm_z"), "INVALID_ARGUMENT: no resource named 'ibm_z' (known: ibm_a,"),
])
def test_bad_allocations_are_refused_with_what_to_fix(served: tuple[str, dict[str, str]], args: tuple[str, ...],
                                                      expected: str) -> None:
    refused = as_user(served, "ops", "admin", "allocation", "set", "proj", *args, ok=False)
    assert expected in " ".join(refused.output.split())
    assert json.loads(as_user(served, "ops", "admin", "allocation", "show", "--json").output) == []
    assert json.loads(as_user(served, "ops", "resources", "--json").output), "the daemon serves on"


async def test_only_admins_set_list_and_delete_allocations(site: Site) -> None:
    for call in (site.alice_admin.SetAllocation(budget("alice", count=5)),
                 site.alice_admin.ListAllocations(admin_pb.ListAllocationsRequest()),
                 site.alice_admin.DeleteAllocation(admin_pb.DeleteAllocationRequest(account="alice"))):
        code, message = await failure(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "requires an admin" in message
    code, message = await failure(site.ops.SetAllocation(budget("", count=5)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "allocation.account is empty: give the Slurm account, or the user name, to charge"
    code, message = await failure(site.ops.SetAllocation(budget("alice", limit="firm", count=5)))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "allocation.limit 'firm' is not one of: hard, soft")
    assert not (await site.ops.ListAllocations(admin_pb.ListAllocationsRequest())).allocations


# -- cluster mode ----------------------------------------------------------------------------------------------


def _listed(address: str) -> list[pb.Allocation]:
    with grpc.insecure_channel(address) as channel:
        return list(admin_grpc.AdminServiceStub(channel).ListAllocations(admin_pb.ListAllocationsRequest()).allocations)


def _until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still not {what} after {timeout} s"
        time.sleep(0.05)


def test_every_member_of_a_cluster_enforces_allocations_set_on_any_with_usage_from_every_member(
        database: Database, tmp_path: Path) -> None:
    me = getuser()
    with Cluster(database, '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 2\n', members=2,
                 tmp=tmp_path) as cluster:
        m1, m2 = (cluster.member(name).address for name in ("m1", "m2"))
        with grpc.insecure_channel(m1) as channel:
            admin_grpc.AdminServiceStub(channel).SetAllocation(budget(me, count=30))
        _until(lambda: [(a.account, a.shots) for a in _listed(m2)] == [(me, 30)], "mirrored to m2")
        with Client(m1) as first, Client(m2) as second:
            first.wait(first.start_task("noop", shots(20)).id, timeout=30)
            _until(lambda: _listed(m2)[0].used_shots == 20, "charged on m2")
            with pytest.raises(grpc.RpcError) as refused:
                second.start_task("noop", shots(11))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "has 10 shots left (20 used)" in (refused.value.details() or "")
            with grpc.insecure_channel(m2) as channel:
                admin_grpc.AdminServiceStub(channel).DrainResource(admin_pb.DrainResourceRequest(resource="noop"))
                _until(lambda: first.resource("noop").status == pb.RESOURCE_STATUS_DRAINING, "drained on m1")
                waiting = first.start_task("noop", shots(6))  # queued on m1: its shots are held on every member
                assert second.task(waiting.id).state == pb.TASK_STATE_QUEUED
                with pytest.raises(grpc.RpcError) as refused:
                    second.start_task("noop", shots(5))
                assert "has 4 shots left (20 used, 6 shots held by unfinished tasks)" in (refused.value.details() or "")
                admin_grpc.AdminServiceStub(channel).DeleteAllocation(admin_pb.DeleteAllocationRequest(account=me))
            _until(lambda: _listed(m1) == [], "deleted on m1")
            assert first.start_task("noop", shots(100)).state == pb.TASK_STATE_QUEUED
            with grpc.insecure_channel(m1) as channel:
                admin_grpc.AdminServiceStub(channel).SetAllocation(budget(me, "soft", count=1))
            low = first.start_task("noop", shots(100))
            assert low.priority == "low" and len(low.warnings) == 1
            seen = second.task(low.id)  # as the store holds it
            assert (seen.priority, list(seen.warnings), seen.wait_reason) == ("low", list(low.warnings), low.warnings[0])



# -- usage of tasks past retention --------------------------------------------------------------------------------


def _ended(store: Listener, owner: str, count: int, state: TaskState, ran: float, account: str = "") -> Task:
    """A task of ``count`` shots that ran ``ran`` seconds and ended in ``state``, as ``store`` records it."""
    task = Task("noop", owner, PulserSequence("{}", count), shots=count, account=account, events=store)
    store.task_queued(task)
    task.transition(TaskState.RUNNING)
    task.transition(state)
    started = (task.view.ended_at or 0.0) - ran
    task.history[-2:] = [replace(task.history[-2], started_at=started), replace(task.view, started_at=started)]
    store.task_changed(task)
    return task


async def test_the_journal_keeps_the_usage_of_tasks_it_drops_past_retention_by_day() -> None:
    path = short_dir() / "journal.db"
    journal = Journal(path, retain_seconds=1e-3, cleanup_interval=3600)
    journal.open()
    journal.start()
    done = [_ended(journal, "alice", 7, TaskState.COMPLETED, 2.5), _ended(journal, "alice", 9, TaskState.FAILED, 1.0),
            _ended(journal, "bob", 4, TaskState.COMPLETED, 0.5, account="physics")]
    await journal.durable()
    await asyncio.sleep(0.01)
    journal.cleanup_interval = 0  # the next commit drops them
    journal.allocation_set(allocation("alice", [], "hard", 0, 20, "day", []))
    await journal.durable()
    await asyncio.to_thread(journal.close)
    reopened = Journal(path)
    recovered = reopened.open()
    reopened.close()
    assert recovered.tasks == [], "past retention"
    today = datetime.fromtimestamp(done[0].view.ended_at or 0).replace(hour=0, minute=0, second=0, microsecond=0)
    assert sorted(recovered.used, key=lambda used: used.account) == [
        Used("alice", "noop", today.timestamp(), pytest.approx(3.5), 7), Used("physics", "noop", today.timestamp(),
                                                                               pytest.approx(0.5), 4)]
    book = Allocations(Events())
    book.restore(recovered.allocations, recovered.tasks, recovered.used)
    [view] = book.views()
    assert (view.used_shots, view.used_seconds) == (7, pytest.approx(3.5))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO usage_days VALUES ('alice', 'noop', 'last tuesday', 1.0, 1)")
    reopened = Journal(path)
    again = reopened.open()
    reopened.close()
    assert again.used == recovered.used, "an unreadable day is left out"
    assert [(row.source, row.reason) for row in again.quarantined] == [
        ("usage_days", "column day is 'last tuesday', not a date (YYYY-MM-DD)")]


async def test_postgresql_keeps_the_usage_of_records_it_drops_past_retention_by_day(database: Database) -> None:
    store = PostgresStore(database.dsn, member="node-a", password_file=password_file(database),
                          retain_seconds=3600, cleanup_interval=3600)
    await asyncio.to_thread(store.open)
    with database.connect() as conn:  # as an election leaves it: only the dispatcher writes a task's run
        conn.execute("INSERT INTO resource_epoch (resource, dispatcher, epoch) VALUES ('noop', 'node-a', 1)")
    store.dispatching("noop", 1)
    store.start()
    try:
        old, new = _ended(store, "alice", 7, TaskState.COMPLETED, 2.5), _ended(store, "alice", 3, TaskState.COMPLETED, 1)
        await store.durable()
        ended = time.time() - 7200
        with database.connect() as conn:
            conn.execute("UPDATE tasks SET ended_at = %s WHERE id = %s", (ended, old.id))
            conn.execute("UPDATE usage SET ended_at = %s, started_at = %s WHERE task_id = %s", (ended, ended - 2.5,
                                                                                                 old.id))
        store.cleanup_interval = 0
        store.allocation_set(allocation("alice", [], "hard", 0, 20, "year", []))  # a write: the tidy-up follows
        await store.durable()
        store.allocation_set(allocation("alice", [], "hard", 0, 20, "year", []))  # committed after it
        await store.durable()
    finally:
        await asyncio.to_thread(store.close)
    again = PostgresStore(database.dsn, member="node-a", password_file=password_file(database))
    recovered = await asyncio.to_thread(again.open)
    day = datetime.fromtimestamp(ended).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    assert [task.id for task in recovered.tasks] == [new.id]
    assert recovered.used == [Used("alice", "noop", day, pytest.approx(2.5), 7)]
    book = Allocations(Events())
    book.restore(recovered.allocations, recovered.tasks, recovered.used)
    [view] = book.views()
    assert view.used_shots == (10 if day >= period_bounds("year", time.time())[0] else 3)
