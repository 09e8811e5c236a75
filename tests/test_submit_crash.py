"""``kill -9`` of a real qrmid process in the IBM submission window: the job's ``POST /v1/jobs`` has landed (the
emulator stored it and holds its answer), its outcome is not journaled. The service counts lanes before it looks
for a duplicate id and the lanes are full, so a second POST would be refused 429, not 409. After the restart,
every task completes once with its own result, as the emulator's and S3's own records show."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator

import pytest
from daemons import ROOT, short_dir
from ibm_services import emulator, ibm_services, s3_requests
from test_ibm_quantum_system import API_KEY, BUCKET, CRN, isa_bell

from qrmid.bench.process import QrmidProcess
from qrmid.client import AsyncClient
from qrmid.emulators.launch import Proc
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

LANES = 2
SHOTS = [11, 12, 13, 14]  # each task's shot count tells its result apart


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    """The emulator with IBM's reference order (lanes counted before the duplicate check), 2 lanes, jobs of 2 s;
    moto behind the recording S3 front."""
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "perth"\n'
                    'device = "perth"\nseed = 7\nnoise = false\njob_duration_s = 4\nadmission_order = "lanes-first"\n'
                    f'lanes = {{ hpc_workload_manager = {LANES}, ibm_quantum_compute = 2 }}\n')
    with ibm_services(path, BUCKET, front=True) as services:
        yield services


def daemon(services: tuple[Proc, Proc]) -> QrmidProcess:
    emulator_proc, s3 = services
    scratch = short_dir()
    config = scratch / "qrmid.toml"
    config.touch(mode=0o600)
    config.write_text(
        f'[daemon]\nsocket = "{scratch / "qrmid.sock"}"\n[journal]\npath = "{scratch / "journal.db"}"\n'
        f'[[resources]]\ntype = "ibm-quantum-system"\nname = "perth"\npoll_interval = 0.1\nstatus_interval = 0.5\n'
        f'retry_deadline_seconds = 30\nQRMI_IBM_QS_ENDPOINT = "{emulator_proc.url}"\n'
        f'QRMI_IBM_QS_IAM_ENDPOINT = "{emulator_proc.url}"\nQRMI_IBM_QS_IAM_APIKEY = "{API_KEY}"\n'
        f'QRMI_IBM_QS_SERVICE_CRN = "{CRN}"\nQRMI_IBM_QS_AWS_ACCESS_KEY_ID = "k"\n'
        f'QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "s"\nQRMI_IBM_QS_S3_ENDPOINT = "{s3.url}"\n'
        f'QRMI_IBM_QS_S3_BUCKET = "{BUCKET}"\nQRMI_IBM_QS_S3_REGION = "us-east-1"\n')
    return QrmidProcess(config, scratch / "qrmid.sock", cwd=ROOT)


async def submissions(services: tuple[Proc, Proc]) -> list[str]:
    return [s["id"] for s in (await emulator(services, "GET", "/_emulator/record"))["backends"]["perth"]["submissions"]]


async def test_kill_9_between_a_landed_post_and_its_journaled_outcome(services: tuple[Proc, Proc]) -> None:
    qrmid = daemon(services)
    journal = qrmid.socket.parent / "journal.db"
    try:
        qrmid.start()
        async with AsyncClient(qrmid.address) as client:
            first = await client.start_task("perth", isa_bell(shots=SHOTS[0]))
            while first.id not in await submissions(services):
                await asyncio.sleep(0.05)
            # the next POST is stored by the service, and its answer held until the client is gone
            await emulator(services, "POST", "/_emulator/faults", {"rules": [
                {"landed": True, "hold_s": 120, "method": "POST", "path_prefix": "/v1/jobs", "count": 1}]})
            ids = [first.id] + [(await client.start_task("perth", isa_bell(shots=n))).id for n in SHOTS[1:]]
        caught = ids[1]
        while caught not in await submissions(services):
            await asyncio.sleep(0.01)
        qrmid.kill()

        with sqlite3.connect(journal) as db:
            state = db.execute("SELECT state, remote_ref FROM tasks WHERE id = ?", (caught,)).fetchone()
        assert state == ("submitting", None), "killed after the POST landed, before its outcome was journaled"
        seen = (await emulator(services, "GET", "/_emulator/record"))["backends"]["perth"]
        assert seen["stored"] == LANES, "the lanes are full: a second POST of the caught job would get 429"
        await emulator(services, "DELETE", "/_emulator/faults")

        qrmid.start()
        async with AsyncClient(qrmid.address, timeout=300) as client:
            finished = [await client.wait(task_id) for task_id in ids]
            assert [task.state for task in finished] == [pb.TASK_STATE_COMPLETED] * len(ids), \
                [task.reason for task in finished]
            for task_id, shots in zip(ids, SHOTS, strict=True):
                counts = summarize(await client.result(task_id))["pubs"][0]["c"]
                assert sum(counts.values()) == shots, "each task has its own job's result"

        record = await emulator(services, "GET", "/_emulator/record")
        seen = record["backends"]["perth"]
        assert sorted(await submissions(services)) == sorted(ids), "every job was stored exactly once"
        assert seen["rejected_409_duplicate"] == seen["rejected_429"] == 0, "no job was posted a second time"
        for _ in range(100):  # the last jobs are released just after their end is journaled
            seen = (await emulator(services, "GET", "/_emulator/record"))["backends"]["perth"]
            if seen["stored"] == 0:
                break
            await asyncio.sleep(0.1)
        deleted = {entry["id"]: entry["time"] for entry in seen["deleted"]}
        assert sorted(deleted) == sorted(ids) and seen["stored"] == 0, "every job was released"
        removals = [r for r in await s3_requests(services) if r["method"] == "DELETE"]
        for task_id in ids:
            mine = [r for r in removals if task_id in r["path"]]
            assert mine, f"the objects of job {task_id} are removed once it is released"
            assert all(r["time"] >= deleted[task_id] for r in mine), \
                f"the S3 objects of job {task_id} were removed before the job was released"
    finally:
        qrmid.stop()
        await emulator(services, "DELETE", "/_emulator/faults")
