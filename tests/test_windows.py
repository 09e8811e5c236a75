"""Reservations and maintenance windows on a real daemon over real gRPC: holders' tasks run inside a reservation
while the others wait with the reason and an ETA after it, then run on their own; a maintenance window holds the
tasks that would not end before it, lets running ones finish, starts none inside it and ends on its own; admins'
windows survive a restart and closed ones are forgotten; the config file plans windows, reloaded; bad windows are
refused with what to fix; an IBM backend's own reservation (``locked``) is listed; the CLI prints ids whole."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from daemons import ROOT, config, running, short_dir, write_config
from google.protobuf.timestamp_pb2 import Timestamp
from ibm_services import emulator, ibm_services
from system_users import system_users
from test_authz import tokens_file
from test_ibm_quantum_system import API_KEY, BELL, BUCKET, CRN
from test_ibm_quantum_system import resource as ibm_resource

from qrmid.client import AsyncClient, pulser_payload
from qrmid.client_auth import ClientAuth
from qrmid.core.times import parse_duration, parse_time
from qrmid.daemon import Daemon
from qrmid.ops.config import ConfigError, load
from qrmid.v1 import admin_pb2 as admin_pb
from qrmid.v1 import admin_pb2_grpc as admin_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

RUN = pulser_payload({"version": "1"}, 1)
USERS = ("qwin_ann", "qwin_ben")  # real Unix users, each in a group of its own name


def stamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def seconds(value: Timestamp) -> float:
    return value.ToNanoseconds() / 1e9


def noop(name: str, slots: int = 1, delay: float = 0.0) -> str:
    return f'[[resources]]\ntype = "noop"\nname = "{name}"\nslots = {slots}\ndelay_seconds = {delay}\n' \
           'poll_interval = 0.05\n'


@dataclass
class Site:
    """A daemon started from a config file; an admin and two users talking to it."""

    daemon: Daemon
    path: Path
    head: str
    ops: admin_grpc.AdminServiceStub
    users: dict[str, AsyncClient]
    secrets: dict[str, str]

    async def window(self, **fields: object) -> pb.Window:
        return await self.ops.CreateWindow(admin_pb.CreateWindowRequest(window=pb.Window(**fields)))  # type: ignore[arg-type]

    async def warm(self, resource: str) -> None:
        """Run a task so the resource knows how long its tasks take."""
        first = await self.users["alice"].start_task(resource, RUN)
        assert (await self.users["alice"].wait(first.id)).state == pb.TASK_STATE_COMPLETED


async def start(resources: str, windows: str = "", names: tuple[str, ...] = ("alice", "bob")) -> Site:
    tokens, secrets = tokens_file({**dict.fromkeys(names, False), "ops": True})
    scratch = short_dir()
    head = (f'[daemon]\nsocket = "{scratch / "qrmid.sock"}"\nshutdown_grace_seconds = 5\nauth = "token"\n'
            f'[auth]\ntokens_file = "{tokens}"\n[journal]\npath = "{scratch / "journal.db"}"\n')
    return await serve(write_config(scratch / "qrmid.toml", head + windows + resources), head, secrets)


async def serve(path: Path, head: str, secrets: dict[str, str]) -> Site:
    """A daemon of the config file ``path`` (again, for a restart), with a client per token in ``secrets``."""
    daemon = Daemon(load(path), path)
    await daemon.start()
    address = f"unix:{daemon.socket}"
    channel = ClientAuth("token", token=secrets["ops"]).channel(address, options=[])
    users = {name: AsyncClient(address, auth=ClientAuth("token", token=secret)) for name, secret in secrets.items()
             if name != "ops"}
    return Site(daemon, path, head, admin_grpc.AdminServiceStub(channel), users, secrets)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    running = await start(noop("qpu", slots=1, delay=0.2) + noop("sim", slots=2, delay=1.0))
    try:
        yield running
    finally:
        await stop(running)


async def stop(site: Site) -> None:
    for client in site.users.values():
        await client.close()
    await site.daemon.stop()


async def until(check: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"{check} still false after {timeout} s"
        await asyncio.sleep(0.05)


async def failure(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value.code(), error.value.details() or ""


def clock(at: float) -> str:
    """A moment as messages give it: the local time of day, with its date when that is not today."""
    moment = datetime.fromtimestamp(at)
    shown = moment.strftime("%H:%M:%S" if moment.second else "%H:%M")
    return shown if moment.date() == datetime.now().date() else f"{moment.date().isoformat()} {shown}"


async def test_inside_a_reservation_only_its_holders_tasks_run_the_others_wait_then_run(site: Site) -> None:
    await site.warm("qpu")
    now = time.time()
    made = await site.window(resource="qpu", kind="reservation", start_time=stamp(now), end_time=stamp(now + 2.5),
                             accounts=["alice"], reason="course CS-501")
    assert (made.origin, made.kind, list(made.accounts)) == ("admin", "reservation", ["alice"])
    end = seconds(made.end_time)
    alice, bob = site.users["alice"], site.users["bob"]
    outsider = await bob.start_task("qpu", RUN)
    holder = await alice.start_task("qpu", RUN)
    assert (await alice.wait(holder.id)).state == pb.TASK_STATE_COMPLETED, "a holder's task runs inside the window"
    waiting = await bob.task(outsider.id)
    assert waiting.state == pb.TASK_STATE_QUEUED
    assert waiting.wait_reason == f"resource qpu is reserved for accounts alice until {clock(end)} " \
                                  f"(reservation {made.id})"
    assert seconds(waiting.estimated_start_time) >= end, "expected after the window, not before"
    seen = await alice.resource("qpu")
    assert seen.active_window.id == made.id and not seen.HasField("next_window")
    ran = await bob.wait(outsider.id)
    assert ran.state == pb.TASK_STATE_COMPLETED and seconds(ran.start_time) >= end, "it ran once the window closed"
    assert not (await bob.resource("qpu")).HasField("active_window")
    await until(lambda: _listed(site))
    with sqlite3.connect(site.daemon.config.journal.path) as db:
        await until(lambda: db.execute("SELECT count(*) FROM windows").fetchone() == (0,))  # closed: forgotten


async def _listed(site: Site) -> bool:
    return not (await site.ops.ListWindows(admin_pb.ListWindowsRequest())).windows


async def test_a_maintenance_window_holds_what_would_not_finish_lets_running_tasks_end_and_resumes(site: Site) -> None:
    await site.warm("sim")  # tasks take 1 s
    alice = site.users["alice"]
    running = await alice.start_task("sim", RUN)
    await until(lambda: _state(alice, running.id, pb.TASK_STATE_RUNNING))
    now = time.time()
    made = await site.window(resource="sim", kind="maintenance", start_time=stamp(now + 0.6),
                             end_time=stamp(now + 2.0), reason="calibration")
    start, end = seconds(made.start_time), seconds(made.end_time)
    ahead = await alice.resource("sim")
    assert ahead.next_window.id == made.id and ahead.next_window.reason == "calibration"
    late = await alice.start_task("sim", RUN)
    held = await alice.task(late.id)
    assert held.state == pb.TASK_STATE_QUEUED, "a slot is free, but the task would not end before the window"
    assert held.wait_reason.startswith(f"resource sim has maintenance from {clock(start)} to {clock(end)} "
                                       f"(window {made.id}: calibration); this task would not finish before it")
    assert seconds(held.estimated_start_time) >= end
    finished = await alice.wait(running.id)
    assert finished.state == pb.TASK_STATE_COMPLETED and seconds(finished.end_time) > start, \
        "the running task went on into the window and finished"
    inside = await alice.resource("sim")
    assert inside.active_window.id == made.id
    in_window = await alice.task(late.id)
    assert in_window.wait_reason == f"resource sim is in maintenance until {clock(end)} (window {made.id}: " \
                                    "calibration)"
    done = await alice.wait(late.id)
    assert done.state == pb.TASK_STATE_COMPLETED and seconds(done.start_time) >= end, "nothing started inside"


async def _state(client: AsyncClient, task_id: str, state: int) -> bool:
    return (await client.task(task_id)).state == state


async def test_bad_windows_are_refused_with_what_to_fix(site: Site) -> None:
    now = time.time()
    hour = 3600.0
    base = {"resource": "qpu", "kind": "reservation", "accounts": ["physics"]}
    cases = [
        ({**base, "start_time": stamp(now + 2 * hour), "end_time": stamp(now + hour)},
         (f"the window ends ({clock(now + hour)}) before it starts ({clock(now + 2 * hour)}): give an end after the "
         "start, or a duration")),
        ({**base, "start_time": stamp(now - 3 * hour), "end_time": stamp(now - 2 * hour)},
         f"the window ended already ({clock(now - 2 * hour)} is in the past): give times ahead"),
        ({**base, "start_time": stamp(now - 2 * hour), "end_time": stamp(now + hour)},
         f"the window would start in the past ({clock(now - 2 * hour)}): start it now or later"),
        ({"resource": "qpu", "kind": "reservation", "start_time": stamp(now + hour), "end_time": stamp(now + 2 * hour)},
         ("a reservation needs holders: give the users, accounts and/or groups whose tasks may run in it (e.g. "
         "--accounts physics)")),
        ({**base, "kind": "maintenance", "start_time": stamp(now + hour), "end_time": stamp(now + 2 * hour)},
         ("a maintenance window has no holders (no task runs in it): leave out users, accounts and groups, or create "
         "a reservation")),
        ({**base, "resource": "nope", "start_time": stamp(now + hour), "end_time": stamp(now + 2 * hour)},
         "resource 'nope' is not served here (resources: qpu, sim): name one of them"),
        ({**base, "kind": "holiday", "start_time": stamp(now + hour), "end_time": stamp(now + 2 * hour)},
         "kind 'holiday' is not a window an admin creates: use 'reservation' or 'maintenance'"),
        ({**base, "start_time": stamp(now + hour)}, "window.end_time is required"),
    ]
    for fields, message in cases:
        assert await failure(site.window(**fields)) == (grpc.StatusCode.INVALID_ARGUMENT, message), message
    first = await site.window(**base, start_time=stamp(now + hour), end_time=stamp(now + 3 * hour))
    code, message = await failure(site.window(**base, start_time=stamp(now + 2 * hour),
                                              end_time=stamp(now + 4 * hour)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == f"the window overlaps reservation window {first.id} ({clock(now + hour)} to " \
                      f"{clock(now + 3 * hour)}) of resource qpu: choose times outside it, or delete it first " \
                      "(qrmid admin unreserve ID)"
    code, message = await failure(site.ops.DeleteWindow(admin_pb.DeleteWindowRequest(id="no-such-id")))
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, (f"no window with id 'no-such-id' (admins' windows not yet "
                                                          f"closed: {first.id})"))
    gone = await site.ops.DeleteWindow(admin_pb.DeleteWindowRequest(id=first.id))
    assert gone.id == first.id
    assert not (await site.ops.ListWindows(admin_pb.ListWindowsRequest())).windows
    code, _ = await failure(site.ops.ListWindows(admin_pb.ListWindowsRequest(resource="nope")))
    assert code == grpc.StatusCode.NOT_FOUND
    assert (await site.users["alice"].resource("qpu")).status == pb.RESOURCE_STATUS_ONLINE, "the daemon serves on"


async def test_admin_windows_survive_a_restart_and_closed_ones_are_forgotten() -> None:
    site = await start(noop("qpu"))
    now = time.time()
    made = await site.window(resource="qpu", kind="reservation", start_time=stamp(now + 3600),
                             end_time=stamp(now + 7200), users=["alice"], groups=["physics"], reason="run 7")
    short = await site.window(resource="qpu", kind="maintenance", start_time=stamp(now), end_time=stamp(now + 1.5))
    await stop(site)
    await asyncio.sleep(max(0.0, seconds(short.end_time) - time.time()))  # it closes while the daemon is down
    again = await serve(site.path, site.head, site.secrets)
    try:
        listed = (await again.ops.ListWindows(admin_pb.ListWindowsRequest())).windows
        assert [(w.id, list(w.users), list(w.groups), w.reason, w.start_time) for w in listed] == \
            [(made.id, ["alice"], ["physics"], "run 7", made.start_time)]
    finally:
        await stop(again)
    with sqlite3.connect(again.daemon.config.journal.path) as db:
        assert [row[0] for row in db.execute("SELECT id FROM windows")] == [made.id], "the closed one is deleted"


async def test_group_reservations_admit_the_groups_members() -> None:
    with system_users(USERS):
        site = await start(noop("qpu", delay=0.1), names=USERS)
        try:
            ann, ben = (site.users[name] for name in USERS)
            first = await ann.start_task("qpu", RUN)
            assert (await ann.wait(first.id)).state == pb.TASK_STATE_COMPLETED
            now = time.time()
            made = await site.window(resource="qpu", kind="reservation", start_time=stamp(now),
                                     end_time=stamp(now + 2.0), groups=[USERS[0]])
            outsider = await ben.start_task("qpu", RUN)
            member = await ann.start_task("qpu", RUN)
            assert (await ann.wait(member.id)).state == pb.TASK_STATE_COMPLETED
            assert (await ben.task(outsider.id)).wait_reason == \
                f"resource qpu is reserved for groups {USERS[0]} until {clock(seconds(made.end_time))} " \
                f"(reservation {made.id})"
            assert seconds((await ben.wait(outsider.id)).start_time) >= seconds(made.end_time)
        finally:
            await stop(site)


def test_times_and_durations_as_admins_write_them() -> None:
    assert [parse_duration(text) for text in ("90s", "30m", "2h", "1h30m", "1d")] == [90, 1800, 7200, 5400, 86400]
    for bad in ("", "2x", "h", "30m2h", "0s", "-1h"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert parse_time("2026-12-24T08:00") == datetime(2026, 12, 24, 8, 0).timestamp(), "no zone: local time"
    assert parse_time("2026-12-24T08:00+01:00") == datetime.fromisoformat("2026-12-24T07:00Z").timestamp()
    assert parse_time("now", now=100.0) == 100.0 and parse_time("now+1h30m", now=100.0) == 5500.0
    with pytest.raises(ValueError, match=r"'tomorrow' is not a time: write it as ISO 8601"):
        parse_time("tomorrow")


CONFIGURED = '''[[windows.maintenance]]
resource = "qpu"
start = "2031-03-01T08:00"
end = "2031-03-01T12:00"
reason = "quarterly calibration"
'''


async def test_config_windows_load_reload_and_cannot_be_deleted() -> None:
    site = await start(noop("qpu"), windows=CONFIGURED)
    try:
        listed = (await site.ops.ListWindows(admin_pb.ListWindowsRequest())).windows
        assert [(w.origin, w.kind, w.reason, seconds(w.start_time)) for w in listed] == \
            [("config", "maintenance", "quarterly calibration", datetime(2031, 3, 1, 8).timestamp())]
        assert (await site.users["alice"].resource("qpu")).next_window.id == listed[0].id
        code, message = await failure(site.ops.DeleteWindow(admin_pb.DeleteWindowRequest(id=listed[0].id)))
        assert (code, message) == (grpc.StatusCode.FAILED_PRECONDITION, (f"window {listed[0].id} comes from the config "
                                   "file: edit its [[windows.maintenance]] and reload"))
        code, message = await failure(site.window(resource="qpu", kind="maintenance",
                                                  start_time=stamp(datetime(2031, 3, 1, 11).timestamp()),
                                                  end_time=stamp(datetime(2031, 3, 1, 13).timestamp())))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "change the config file" in message
        write_config(site.path, site.head + CONFIGURED.replace("12:00", "14:00") + noop("qpu"))
        await site.ops.ReloadConfig(admin_pb.ReloadConfigRequest())
        listed = (await site.ops.ListWindows(admin_pb.ListWindowsRequest())).windows
        assert [seconds(w.end_time) for w in listed] == [datetime(2031, 3, 1, 14).timestamp()]
        write_config(site.path, site.head + CONFIGURED.replace('"qpu"', '"gone"') + noop("qpu"))
        code, message = await failure(site.ops.ReloadConfig(admin_pb.ReloadConfigRequest()))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "windows.maintenance: resource 'gone' is not configured (resources: qpu)" in message
        assert len((await site.ops.ListWindows(admin_pb.ListWindowsRequest())).windows) == 1, "the old config stays"
    finally:
        await stop(site)


@pytest.mark.parametrize(("text", "message"), [
    ('[[windows.maintenance]]\nresource = "qpu"\nstart = "2031-03-01T08:00"\nend = "2031-03-01T07:00"\n',
     "key 'windows.maintenance[0]': end (2031-03-01T07:00:00) must be after start (2031-03-01T08:00:00)"),
    ('[[windows.maintenance]]\nresource = "qpu"\nstart = "soon"\nend = "2031-03-01T07:00"\n',
     ("key 'windows.maintenance[0].start': must be a time such as 2026-12-24T08:00 (local time) or "
     "2026-12-24T08:00+01:00 (got 'soon')")),
    (CONFIGURED + CONFIGURED.replace("08:00", "11:00").replace("12:00", "13:00"),
     ("windows.maintenance: two windows of resource 'qpu' overlap (2031-03-01T08:00:00 to 2031-03-01T12:00:00 and "
     "2031-03-01T11:00:00 to 2031-03-01T13:00:00): merge them or move one")),
    ("[windows]\nmax_per_resource = 0\n", "key 'windows.max_per_resource': must be at least 1 and at most 10000"),
])
def test_config_windows_are_checked_at_load(text: str, message: str) -> None:
    path = write_config(short_dir() / "qrmid.toml", text + noop("qpu"))
    with pytest.raises(ConfigError) as error:
        load(path)
    assert message in str(error.value)


def qrmid(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qrmid", "--address", address, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


async def test_the_cli_reserves_lists_drains_at_and_unreserves_ids_whole() -> None:
    scratch = short_dir()
    path = write_config(scratch / "qrmid.toml", f'[daemon]\nsocket = "{scratch / "qrmid.sock"}"\n[journal]\n'
                        f'path = "{scratch / "journal.db"}"\n' + noop("qpu-with-a-long-name") + noop("qpu2"))
    daemon = Daemon(load(path), path)
    await daemon.start()
    address = f"unix:{daemon.socket}"
    try:
        made = await asyncio.to_thread(qrmid, address, "admin", "reserve", "qpu-with-a-long-name", "--start",
                                       "now+1h", "--for", "2h", "--accounts", "physics,chemistry",
                                       "--reason", "beam time")
        assert made.returncode == 0, made.stderr
        window_id = made.stdout.strip()
        drained = await asyncio.to_thread(qrmid, address, "admin", "drain", "qpu-with-a-long-name", "--at",
                                          "now+4h", "--for", "30m", "--reason", "calibration")
        assert drained.returncode == 0, drained.stderr
        maintenance_id = drained.stdout.strip()
        listed = await asyncio.to_thread(qrmid, address, "admin", "reservations", "--json")
        windows = json.loads(listed.stdout)
        assert [(w["id"], w["kind"], w.get("accounts", [])) for w in windows] == \
            [(window_id, "reservation", ["physics", "chemistry"]), (maintenance_id, "maintenance", [])]
        table = await asyncio.to_thread(qrmid, address, "admin", "windows")
        assert window_id in table.stdout and maintenance_id in table.stdout, "ids are never cut"
        resources = await asyncio.to_thread(qrmid, address, "resources")
        assert "next: reservation" in resources.stdout and f"({window_id})" in resources.stdout
        bad = await asyncio.to_thread(qrmid, address, "admin", "reserve", "qpu-with-a-long-name", "--end", "soon",
                                      "--users", "alice")
        assert bad.returncode != 0 and "'soon' is not a time: write it as ISO 8601" in bad.stderr
        overlap = await asyncio.to_thread(qrmid, address, "admin", "drain", "qpu-with-a-long-name", "--at",
                                          "now+2h", "--for", "1h")
        assert overlap.returncode != 0 and f"INVALID_ARGUMENT: the window overlaps reservation window {window_id}" \
            in " ".join(overlap.stderr.split())
        now = await asyncio.to_thread(qrmid, address, "admin", "reserve", "qpu2", "--for", "1h", "--users", "alice")
        task_id = (await asyncio.to_thread(qrmid, address, "submit", "qpu2", "qrmid/examples/pulser.json")).stdout
        shown = (await asyncio.to_thread(qrmid, address, "status", task_id.strip())).stdout
        assert "waiting         resource qpu2 is reserved for users alice until " in shown, shown
        assert f"(reservation {now.stdout.strip()})" in shown
        gone = await asyncio.to_thread(qrmid, address, "admin", "unreserve", window_id)
        assert gone.returncode == 0, gone.stderr
        left = json.loads((await asyncio.to_thread(qrmid, address, "admin", "windows", "--resource",
                                                   "qpu-with-a-long-name", "--json")).stdout)
        assert [w["id"] for w in left] == [maintenance_id]
    finally:
        await daemon.stop()


async def test_an_ibm_backends_own_reservation_is_listed_without_an_end(tmp_path: Path) -> None:
    emulator_config = tmp_path / "emulator.toml"
    emulator_config.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "torino"\n'
                               'device = "perth"\nlanes = { hpc_workload_manager = 2, ibm_quantum_compute = 1 }\n')
    with ibm_services(emulator_config, BUCKET) as services:
        cfg = config([ibm_resource("torino", services)])
        async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client, \
                grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            ops = admin_grpc.AdminServiceStub(channel)
            assert not (await ops.ListWindows(admin_pb.ListWindowsRequest())).windows
            await emulator(services, "POST", "/_emulator/backends/torino", {"locked": True})
            await until(lambda: _backend_window(ops))
            listed = (await ops.ListWindows(admin_pb.ListWindowsRequest(resource="torino"))).windows
            assert [(w.id, w.kind, w.origin, w.HasField("end_time")) for w in listed] == \
                [("backend", "backend", "backend", False)]
            assert seconds(listed[0].start_time) <= time.time()
            assert (await client.resource("torino")).active_window.kind == "backend"
            later = await ops.CreateWindow(admin_pb.CreateWindowRequest(window=pb.Window(
                resource="torino", kind="maintenance", start_time=stamp(time.time() + 3600),
                end_time=stamp(time.time() + 7200))))  # planned while the backend's own reservation lasts
            assert [w.id for w in (await ops.ListWindows(admin_pb.ListWindowsRequest())).windows] == \
                ["backend", later.id]
            task = await client.start_task("torino", BELL)
            assert (await client.task(task.id)).wait_reason == \
                "resource torino is reserved on the backend's side (it runs only its own reservation's jobs); tasks " \
                "wait until the backend releases it"
            await emulator(services, "POST", "/_emulator/backends/torino", {"locked": False})
            assert (await client.wait(task.id)).state == pb.TASK_STATE_COMPLETED
            assert [w.id for w in (await ops.ListWindows(admin_pb.ListWindowsRequest())).windows] == [later.id]


async def _backend_window(ops: admin_grpc.AdminServiceStub) -> bool:
    return bool((await ops.ListWindows(admin_pb.ListWindowsRequest())).windows)


async def test_a_task_staged_ahead_on_ibm_does_not_start_in_a_window_that_opened_meanwhile(tmp_path: Path) -> None:
    emulator_config = tmp_path / "emulator.toml"
    emulator_config.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "fez"\n'
                               'device = "perth"\njob_duration_s = 1.5\n'
                               'lanes = { hpc_workload_manager = 1, ibm_quantum_compute = 1 }\n')
    with ibm_services(emulator_config, BUCKET) as services:
        async with running(config([ibm_resource("fez", services)])) as daemon, \
                AsyncClient(f"unix:{daemon.socket}") as client, \
                grpc.aio.insecure_channel(f"unix:{daemon.socket}") as channel:
            first = await client.start_task("fez", BELL)  # its run time is known from now on
            assert (await client.wait(first.id)).state == pb.TASK_STATE_COMPLETED
            running_task = await client.start_task("fez", BELL)
            await until(lambda: _state(client, running_task.id, pb.TASK_STATE_RUNNING))
            ahead = await client.start_task("fez", BELL)  # taken while the one lane is busy: staged ahead
            await asyncio.sleep(0.3)
            now = time.time()
            made = await admin_grpc.AdminServiceStub(channel).CreateWindow(admin_pb.CreateWindowRequest(
                window=pb.Window(resource="fez", kind="maintenance", start_time=stamp(now),
                                 end_time=stamp(now + 3.0))))
            assert (await client.wait(running_task.id)).state == pb.TASK_STATE_COMPLETED
            ran = await client.wait(ahead.id)
            assert ran.state == pb.TASK_STATE_COMPLETED
            assert seconds(ran.start_time) >= seconds(made.end_time), "it waited for the window's end"
