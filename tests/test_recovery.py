"""Crash recovery: ``kill -9`` of a real qrmid process mid-run, a restart on the same journal, and every task done
exactly once, as the IBM Quantum System API and Pasqal Cloud emulators' own records of submissions show; and a
``kill -9`` while a retried request waits for its journal commit."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
from daemons import ROOT, short_dir
from emulators.pasqal_fixtures import PROJECT, Emulator, password_grant, running_emulator
from ibm_services import Services, emulator, ibm_services, record
from test_ibm_quantum_system import API_KEY, BUCKET, CRN, isa_bell
from test_pasqal_cloud import program
from test_pasqal_cloud import resource as pasqal_resource

from qrmid.bench.process import QrmidProcess
from qrmid.client import AsyncClient, pulser_payload
from qrmid.emulators.launch import Proc
from qrmid.v1 import admin_pb2, admin_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

TASKS = 200
TERMINAL = {pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED}


@contextmanager
def perth(directory: Path) -> Iterator[Services]:
    """The IBM emulator (4 lanes, jobs of 0.2 s) and a moto S3 with the job bucket; its config in ``directory``."""
    path = directory / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "perth"\n'
                    'device = "perth"\nseed = 7\nnoise = false\njob_duration_s = 0.2\n'
                    'lanes = { hpc_workload_manager = 4, ibm_quantum_compute = 2 }\n')
    with ibm_services(path, BUCKET) as services:
        yield services


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with perth(tmp_path_factory.mktemp("ibm")) as found:
        yield found


class Qrmid(QrmidProcess):
    """``qrmid serve`` in its own process on one config and journal, restartable, killable with SIGKILL."""

    def __init__(self, resources: str) -> None:
        scratch = short_dir()
        socket, config = scratch / "qrmid.sock", scratch / "qrmid.toml"
        self.journal = scratch / "journal.db"
        config.touch(mode=0o600)  # it holds API keys
        config.write_text(f'[daemon]\nsocket = "{socket}"\nshutdown_grace_seconds = 2\n'
                          f'[journal]\npath = "{self.journal}"\n[limits]\ncalls_per_second = 0\nstreams_per_client = 0\n'
                          f'{resources}')
        super().__init__(config, socket, cwd=ROOT)


def ibm_resource(services: tuple[Proc, Proc]) -> str:
    emulator, s3 = services
    return (f'[[resources]]\ntype = "ibm-quantum-system"\nname = "perth"\npoll_interval = 0.1\nstatus_interval = 0.5\n'
            f'retry_deadline_seconds = 30\nQRMI_IBM_QS_ENDPOINT = "{emulator.url}"\n'
            f'QRMI_IBM_QS_IAM_ENDPOINT = "{emulator.url}"\nQRMI_IBM_QS_IAM_APIKEY = "{API_KEY}"\n'
            f'QRMI_IBM_QS_SERVICE_CRN = "{CRN}"\nQRMI_IBM_QS_AWS_ACCESS_KEY_ID = "k"\n'
            f'QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "s"\nQRMI_IBM_QS_S3_ENDPOINT = "{s3.url}"\n'
            f'QRMI_IBM_QS_S3_BUCKET = "{BUCKET}"\nQRMI_IBM_QS_S3_REGION = "us-east-1"\n')


async def states(address: str, ids: list[str]) -> list[int]:
    async with AsyncClient(address) as qrmid:
        return [(await qrmid.task(task_id)).state for task_id in ids]


async def finish(address: str, ids: list[str]) -> list[pb.Task]:
    async with AsyncClient(address, timeout=600) as qrmid:
        return list(await asyncio.gather(*(qrmid.wait(task_id) for task_id in ids)))


async def ran_once_and_released(services: Services, ids: list[str]) -> None:
    """Check that each of ``ids`` reached perth exactly once and that every job was deleted, those that ended around
    the crash after the restart."""
    seen = await record(services, "perth")
    assert sorted(submission["id"] for submission in seen["submissions"]) == sorted(ids), \
        "every task reached the backend exactly once"
    for _ in range(100):
        if seen["stored"] == 0:
            break
        await asyncio.sleep(0.1)
        seen = await record(services, "perth")
    assert seen["stored"] == 0 and seen["deletes"] == len(ids), "no job is left holding a lane"


async def test_kill_9_mid_run_then_restart_runs_every_ibm_task_exactly_once(services: tuple[Proc, Proc]) -> None:
    daemon = Qrmid(ibm_resource(services))
    payload = isa_bell(shots=20)
    try:
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            ids = [(await qrmid.start_task("perth", payload, request_id=f"job-{n}")).id for n in range(TASKS)]
        while True:  # let some finish and some be on the backend: then crash
            now = await states(daemon.address, ids)
            if now.count(pb.TASK_STATE_COMPLETED) >= 20 and pb.TASK_STATE_RUNNING in now:
                break
            await asyncio.sleep(0.2)
        daemon.kill()
        queued_at_crash = now.count(pb.TASK_STATE_QUEUED)
        assert queued_at_crash > 100, "most tasks were still queued when the daemon died"

        # a backend outage as the daemon comes back: re-attaching and dispatch must ride it out
        await emulator(services, "POST", "/_emulator/faults",
                       {"rules": [{"status": 503, "path_prefix": "/v1/", "seconds": 3}]})
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            retried = [(await qrmid.start_task("perth", payload, request_id=f"job-{n}")).id for n in range(TASKS)]
        assert retried == ids, "a retried request id returns the task made before the crash"
        finished = await finish(daemon.address, ids)
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * TASKS, \
            [task.reason for task in finished if task.state != pb.TASK_STATE_COMPLETED]

        await ran_once_and_released(services, ids)

        results = {}
        async with AsyncClient(daemon.address) as qrmid:
            for task_id in ids[:20]:
                results[task_id] = await qrmid.result(task_id)
        daemon.stop()  # a clean restart keeps serving finished tasks from the journal
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            for task_id, data in results.items():
                assert await qrmid.result(task_id) == data
    finally:
        daemon.stop()
        await emulator(services, "DELETE", "/_emulator/faults")


async def test_kill_9_reruns_the_tasks_of_a_local_backend_and_keeps_finished_ones() -> None:
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "noop"\nslots = 2\ndelay_seconds = 0.5\n')
    payload = pulser_payload({"sequence": "x"}, 1)
    try:
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            ids = [(await qrmid.start_task("noop", payload)).id for _ in range(12)]
            while (await qrmid.task(ids[1])).state != pb.TASK_STATE_COMPLETED:
                await asyncio.sleep(0.05)
            done = {task_id: await qrmid.task(task_id) for task_id in ids[:2]}
        daemon.kill()
        daemon.start()
        finished = await finish(daemon.address, ids)
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * len(ids)
        for task in finished[:2]:
            assert task.end_time == done[task.id].end_time, "a finished task is not run again"
    finally:
        daemon.stop()


def test_journal_file_is_private() -> None:
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "noop"\n')
    try:
        daemon.start()
        assert daemon.journal.stat().st_mode & 0o077 == 0, "the journal holds lease tokens and payloads"
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def pasqal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with running_emulator(tmp_path_factory.mktemp("pasqal"), job_duration_s=0.3) as process:
        yield process


async def test_kill_9_mid_run_then_restart_runs_every_pasqal_task_exactly_once(pasqal: Emulator) -> None:
    settings = pasqal_resource(pasqal, "fresnel", "FRESNEL", slots=8, max_jobs_per_batch=5)
    daemon = Qrmid("[[resources]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    text = program(pasqal, "FRESNEL")
    runs = range(10, 50)  # each task's run count tells its job apart in the emulator's record
    try:
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            ids = [(await qrmid.start_task("fresnel", pulser_payload(text, n))).id for n in runs]
        while True:
            now = await states(daemon.address, ids)
            if now.count(pb.TASK_STATE_COMPLETED) >= 5 and pb.TASK_STATE_RUNNING in now:
                break
            await asyncio.sleep(0.05)
        daemon.kill()
        daemon.start()
        finished = await finish(daemon.address, ids)
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * len(ids), \
            [task.reason for task in finished if task.state != pb.TASK_STATE_COMPLETED]
        async with AsyncClient(daemon.address) as qrmid:
            for n, task_id in zip(runs, ids, strict=True):
                assert sum(json.loads(await qrmid.result(task_id))["counter"].values()) == n
        seen = await asyncio.to_thread(pasqal.record)
        batches = {batch["id"]: batch for batch in seen["batches"] if batch["device_type"] == "FRESNEL"}
        jobs = [job for job in seen["jobs"] if job["batch_id"] in batches]
        assert sorted(job["runs"] for job in jobs) == list(runs), "every task became exactly one job"
        for _ in range(100):  # a batch left open by the crash is completed after the restart
            seen = await asyncio.to_thread(pasqal.record)
            if not any(batch["open"] for batch in seen["batches"] if batch["device_type"] == "FRESNEL"):
                break
            await asyncio.sleep(0.1)
        assert not any(batch["open"] for batch in seen["batches"] if batch["device_type"] == "FRESNEL")
    finally:
        daemon.stop()


async def test_a_pasqal_write_cut_short_by_a_crash_is_found_or_redone_never_doubled(pasqal: Emulator) -> None:
    """The journal says two jobs were being created in new batches when the daemon died; the service holds the
    batch of one (found by its tag: followed, not resubmitted) and never got the other (submitted again)."""
    settings = pasqal_resource(pasqal, "fresnel", "FRESNEL")
    daemon = Qrmid("[[resources]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    text = program(pasqal, "FRESNEL")
    await asyncio.to_thread(pasqal.control, "POST", "devices/FRESNEL", {"availability": "INACTIVE"})
    try:
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            landed, lost = [(await qrmid.start_task("fresnel", pulser_payload(text, runs))).id for runs in (100, 101)]
        daemon.kill()
        with sqlite3.connect(daemon.journal) as db:  # as the journal stands when a crash cuts the write short
            for task_id, tag in ((landed, "qrmid-landed"), (lost, "qrmid-lost")):
                db.execute("UPDATE tasks SET state = 'running', started_at = created_at, remote_ref = ? WHERE id = ?",
                           (json.dumps({"placing": "new", "tag": tag, "index": 0}), task_id))
        await asyncio.to_thread(pasqal.control, "POST", "devices/FRESNEL", {"availability": "ACTIVE"})
        token = (await asyncio.to_thread(password_grant, pasqal.url)).json()["access_token"]
        async with httpx.AsyncClient(base_url=f"{pasqal.url}/core-fast",
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            created = await http.post("/api/v1/batches", json={
                "sequence_builder": text, "jobs": [{"runs": 100}], "device_type": "FRESNEL", "project_id": PROJECT,
                "open": False, "tags": ["qrmid-landed"]})
            assert created.status_code == 200, created.text
        daemon.start()
        finished = await finish(daemon.address, [landed, lost])
        assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * 2, [task.reason for task in finished]
        async with AsyncClient(daemon.address) as qrmid:
            assert sum(json.loads(await qrmid.result(landed))["counter"].values()) == 100
            assert sum(json.loads(await qrmid.result(lost))["counter"].values()) == 101
        seen = await asyncio.to_thread(pasqal.record)
        fresnel = {batch["id"] for batch in seen["batches"] if batch["device_type"] == "FRESNEL"}
        runs = [job["runs"] for job in seen["jobs"] if job["batch_id"] in fresnel]
        assert (runs.count(100), runs.count(101)) == (1, 1), "the landed job was followed, the lost one redone"
    finally:
        await asyncio.to_thread(pasqal.control, "POST", "devices/FRESNEL", {"availability": "ACTIVE"})
        daemon.stop()


HOLD_COMMITS = '''"""Fault injection: journal commits wait while {hold} exists (and create {entered})."""
import pathlib
import time

from qrmid.store.journal import Journal

hold, entered = pathlib.Path("{hold}"), pathlib.Path("{entered}")


def held() -> None:
    while hold.exists():
        entered.touch()
        time.sleep(0.02)


Journal.before_commit = held
'''


async def test_kill_9_while_a_retried_request_waits_for_its_commit_never_makes_a_second_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hold, entered = held_commits(monkeypatch)
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "noop"\n')
    payload = pulser_payload({"sequence": "x"}, 1)
    try:
        daemon.start()
        hold.touch()
        async with AsyncClient(daemon.address, timeout=30) as first, \
                AsyncClient(daemon.address, timeout=30) as second:
            attempt = asyncio.create_task(first.start_task("noop", payload, request_id="once"))
            for _ in range(1500):  # until the first attempt's task is in a commit that does not end
                if entered.exists():
                    break
                await asyncio.sleep(0.02)
            assert entered.exists(), "the journal's commit was never held"
            retry = asyncio.create_task(second.start_task("noop", payload, request_id="once"))
            await asyncio.wait([retry], timeout=1)
            daemon.kill()
            outcomes = await asyncio.gather(attempt, retry, return_exceptions=True)
        assert all(isinstance(outcome, grpc.aio.AioRpcError) for outcome in outcomes), \
            f"a call was answered before its task was durable: {outcomes}"
        hold.unlink()
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            made = await qrmid.start_task("noop", payload, request_id="once")
            again = await qrmid.start_task("noop", payload, request_id="once")
            assert again.id == made.id
            assert (await qrmid.wait(made.id)).state == pb.TASK_STATE_COMPLETED
    finally:
        hold.unlink(missing_ok=True)
        daemon.stop()
    with sqlite3.connect(daemon.journal) as db:
        assert db.execute("SELECT id FROM tasks WHERE client_request_id = 'once'").fetchall() == [(made.id,)]


def held_commits(monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Files that hold the journal's commits of a daemon started after this (while ``hold`` exists) and tell
    when one was held (``entered``)."""
    hooks = short_dir()
    hold, entered = hooks / "hold", hooks / "entered"
    (hooks / "sitecustomize.py").write_text(HOLD_COMMITS.format(hold=hold, entered=entered))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])))
    return hold, entered


async def test_a_task_is_shown_finished_only_once_its_end_is_journaled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher that saw a task complete must never see it run again after a kill -9: a state reaches callers
    only once the journal has it."""
    hold, entered = held_commits(monkeypatch)
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "noop"\ndelay_seconds = 0.5\n')
    seen: list[int] = []
    try:
        daemon.start()
        async with AsyncClient(daemon.address, timeout=30) as qrmid, \
                grpc.aio.insecure_channel(daemon.address) as channel:
            task = await qrmid.start_task("noop", pulser_payload({"sequence": "x"}, 1))
            hold.touch()

            async def watch() -> None:
                async for view in qrmid.watch(task.id):
                    seen.append(view.state)

            watcher = asyncio.create_task(watch())
            queues = admin_pb2_grpc.AdminServiceStub(channel)
            for _ in range(1500):  # until the daemon has finished the task, its end held out of the journal
                listed = await queues.ListQueues(admin_pb2.ListQueuesRequest(resource="noop"))
                if entered.exists() and not listed.tasks:
                    break
                await asyncio.sleep(0.02)
            assert entered.exists() and not listed.tasks, "the task never finished with its commit held"
            shown = await qrmid.task(task.id)
            await asyncio.sleep(0.5)  # a late, wrong message would arrive in this time
            daemon.kill()
            await asyncio.gather(watcher, return_exceptions=True)
        assert shown.state != pb.TASK_STATE_COMPLETED and pb.TASK_STATE_COMPLETED not in seen, \
            f"a completion was shown before the journal had it: GetTask {shown.state}, watched {seen}"
        hold.unlink()
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            assert (await qrmid.wait(task.id)).state == pb.TASK_STATE_COMPLETED
    finally:
        hold.unlink(missing_ok=True)
        daemon.stop()


async def test_an_admins_drain_survives_kill_9() -> None:
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "noop"\n')
    try:
        daemon.start()
        async with grpc.aio.insecure_channel(daemon.address) as channel:
            await admin_pb2_grpc.AdminServiceStub(channel).DrainResource(
                admin_pb2.DrainResourceRequest(resource="noop", reason="cooling down until 16:00"))
        daemon.kill()  # answered: the drain is journaled
        daemon.start()
        async with AsyncClient(daemon.address) as qrmid:
            drained = await qrmid.resource("noop")
            assert (drained.status, drained.status_reason) == (pb.RESOURCE_STATUS_DRAINING, "cooling down until 16:00")
    finally:
        daemon.stop()


async def test_a_new_client_reaches_a_restarted_daemon_at_once() -> None:
    """A client made after a restart connects afresh, whatever reconnect backoff an earlier client of the same
    process started while the daemon was down."""
    daemon = Qrmid('[[resources]]\ntype = "noop"\nname = "noop"\n')
    try:
        daemon.start()
        async with AsyncClient(daemon.address) as before:
            assert [r.name for r in await before.list_resources()] == ["noop"]
            daemon.kill()
            with pytest.raises(grpc.aio.AioRpcError) as down:  # connection refused: gRPC backs off reconnecting
                await before.list_resources()
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        daemon.start()
        async with AsyncClient(daemon.address) as after:
            assert [r.name for r in await after.list_resources()] == ["noop"]
    finally:
        daemon.stop()
