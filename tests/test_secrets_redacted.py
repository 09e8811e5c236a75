"""No vendor secret leaves an adapter: S3 answers a 403 whose XML body echoes the request's access key id, as AWS
does, both to qrmid's own upload and to the service's read of a job's input; the configured key id then appears in
no GetTask reason, WatchTask message, ``qrmid status`` output, log line or journal row of a real daemon process."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from daemons import ROOT, short_dir, wait_serving, write_config
from ibm_services import ibm_services
from test_ibm_quantum_system import API_KEY, BUCKET, CRN, isa_bell

from qrmid.backends.base import Busy
from qrmid.backends.redact import Redactor
from qrmid.client import AsyncClient
from qrmid.emulators.launch import Proc
from qrmid.v1 import quantum_resources_pb2 as pb

KEY_ID = "AKIAQRMIDTESTKEY0042"
SECRET = "qrmid/test+secret/key/0000000000000000042"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "perth"\n'
                    'device = "perth"\nseed = 7\nnoise = false\n')
    with ibm_services(path, BUCKET, front=True) as services:
        yield services


@pytest.fixture
def daemon(services: tuple[Proc, Proc]) -> Iterator[tuple[str, Path, Path]]:
    """``qrmid serve`` at debug level, its log in a file; yields (address, log file, journal)."""
    emulator_proc, s3 = services
    scratch = short_dir()
    socket, journal, log = scratch / "qrmid.sock", scratch / "journal.db", scratch / "qrmid.log"
    config = write_config(scratch / "qrmid.toml", (
        f'[daemon]\nsocket = "{socket}"\nlog_level = "debug"\n[journal]\npath = "{journal}"\n'
        f'[[resources]]\ntype = "ibm-quantum-system"\nname = "perth"\npoll_interval = 0.1\nstatus_interval = 0.5\n'
        f'retry_deadline_seconds = 5\nQRMI_IBM_QS_ENDPOINT = "{emulator_proc.url}"\n'
        f'QRMI_IBM_QS_IAM_ENDPOINT = "{emulator_proc.url}"\nQRMI_IBM_QS_IAM_APIKEY = "{API_KEY}"\n'
        f'QRMI_IBM_QS_SERVICE_CRN = "{CRN}"\nQRMI_IBM_QS_AWS_ACCESS_KEY_ID = "{KEY_ID}"\n'
        f'QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "{SECRET}"\nQRMI_IBM_QS_S3_ENDPOINT = "{s3.url}"\n'
        f'QRMI_IBM_QS_S3_BUCKET = "{BUCKET}"\nQRMI_IBM_QS_S3_REGION = "us-east-1"\n'))
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(config)], cwd=ROOT,
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"unix:{socket}", process=process)
        yield f"unix:{socket}", log, journal
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


async def failed_run(address: str) -> tuple[pb.Task, list[str]]:
    """Run a task to its end; it and every message WatchTask streamed about it."""
    async with AsyncClient(address) as qrmid:
        task = await qrmid.start_task("perth", isa_bell(shots=10))
        messages = [f"{update}" async for update in qrmid.watch(task.id)]
        return await qrmid.task(task.id), messages


async def test_a_key_id_echoed_by_s3_reaches_no_answer_log_or_journal(services: tuple[Proc, Proc],
                                                                     daemon: tuple[str, Path, Path]) -> None:
    address, log, journal = daemon
    front = f"{services[1].url}/_emulator/faults"
    tasks: list[pb.Task] = []
    streamed: list[str] = []
    # qrmid's own upload of the input is refused; then the service's read of another job's input
    for method in ("PUT", "GET"):
        async with httpx.AsyncClient() as http:
            plan = {"rules": [{"status": 403, "message": "InvalidAccessKeyId", "method": method, "count": 1,
                               "path_prefix": f"/{BUCKET}/input_"}]}
            (await http.post(front, json=plan)).raise_for_status()
        task, messages = await failed_run(address)
        tasks.append(task)
        streamed += messages
    assert [task.state for task in tasks] == [pb.TASK_STATE_FAILED] * 2
    assert "S3 PUT input_" in tasks[0].reason and "HTTP 403: InvalidAccessKeyId: The AWS Access Key Id you " \
        "provided does not exist" in tasks[0].reason, tasks[0].reason
    assert "Could not read the job input: HTTP 403" in tasks[1].reason, tasks[1].reason
    assert "[redacted]" in tasks[1].reason, "the service's words are passed on, the key id it quoted is masked"

    status = [(await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "qrmid", "--address", address, "status", task.id], cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=True)).stdout for task in tasks]
    assert all(task.id in text for task, text in zip(tasks, status, strict=True))
    await asyncio.sleep(0.5)  # the journal's last commits and log lines
    with sqlite3.connect(journal) as db:
        rows = [repr(row) for table in ("tasks", "transitions") for row in db.execute(f"SELECT * FROM {table}")]
    logged = log.read_text()
    assert tasks[0].id in logged and "DEBUG" in logged, "the daemon logged at debug level about the task"
    for place, text in {"GetTask": "".join(task.reason for task in tasks), "WatchTask": "".join(streamed),
                        "qrmid status": "".join(status), "log": logged, "journal": "".join(rows)}.items():
        assert KEY_ID not in text and SECRET not in text, f"a secret leaked into the {place}"
        assert API_KEY not in text, f"the IAM API key leaked into the {place}"


def test_the_redactor_masks_secrets_in_text_and_errors_and_keeps_their_kind() -> None:
    redact = Redactor(KEY_ID, SECRET, "pw42", "s", None)
    assert redact(f"<AWSAccessKeyId>{KEY_ID}</AWSAccessKeyId>") == "<AWSAccessKeyId>[redacted]</AWSAccessKeyId>"
    assert redact(f"sig={quote(SECRET, safe='')}&x") == "sig=[redacted]&x", "URL-encoded forms too"
    assert redact("password pw42, not pw425") == "password [redacted], not pw425", "a short one where it stands alone"
    assert redact("kept failing for 3 s") == "kept failing for 3 s", "a trivial one guards nothing"
    redact.learn("eyJ.issued-token.sig")
    assert redact("Bearer eyJ.issued-token.sig") == "Bearer [redacted]"

    with pytest.raises(Busy) as busy, redact.errors():
        raise Busy(f"lanes full for {KEY_ID}")
    assert str(busy.value) == "lanes full for [redacted]" and busy.value.__suppress_context__
    with pytest.raises(RuntimeError) as wrapped, redact.errors():
        try:
            raise ValueError(SECRET)
        except ValueError:
            raise RuntimeError("upload failed") from None
    assert str(wrapped.value) == "upload failed"
    with pytest.raises(RuntimeError) as chained, redact.errors():
        try:
            raise ValueError(SECRET)
        except ValueError as exc:
            raise RuntimeError("upload failed") from exc
    assert chained.value.__cause__ is None and chained.value.__suppress_context__, "the cause holding it is dropped"
