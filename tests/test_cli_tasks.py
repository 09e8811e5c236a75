"""Submitting without waiting and finding one's tasks from the command line, against a real daemon process:
``qrmid submit``, ``qrmid tasks`` and its owner scoping, Ctrl-C (a real SIGINT) on ``qrmid run``, the times
``qrmid watch`` prints, and the commands that used to do nothing silently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from daemons import ROOT, subprocess_daemon

from qrmid.client import Client, pulser_payload
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

RESOURCES = """shutdown_grace_seconds = 1

[[resources]]
type = "noop"
name = "quick"
slots = 4

[[resources]]
type = "noop"
name = "slow"
slots = 1
delay_seconds = 4

[[resources]]
type = "noop"
name = "busy"
slots = 1
delay_seconds = 600

[tasks]
list_page_size = 2  # listings of more tasks come in pages
"""
SEQUENCE = {"sequence": {"version": "1"}, "job_runs": 1}
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab", "boss": "boss-token-0123456789a"}


def qrmid(*args: str, address: str, check: bool = True, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "qrmid", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "QRMID_ADDRESS": address, **(env or {})})
    if check:
        assert run.returncode == 0, run.stderr
    return run


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with subprocess_daemon(RESOURCES) as (address, _):
        yield address


@pytest.fixture(scope="module")
def task_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "sequence.json"
    path.write_text(json.dumps(SEQUENCE))
    return path


def test_submit_prints_only_the_id_and_tasks_lists_it(address: str, task_input: Path) -> None:
    submitted = qrmid("submit", "quick", str(task_input), address=address)
    task_id = submitted.stdout.strip()
    assert submitted.stdout == f"{task_id}\n" and submitted.stderr == ""
    detached = qrmid("run", "quick", str(task_input), "--detach", address=address).stdout.strip()
    with Client(address) as client:
        assert client.wait(task_id, timeout=60).state == pb.TASK_STATE_COMPLETED
        assert client.wait(detached, timeout=60).state == pb.TASK_STATE_COMPLETED
    listed = json.loads(qrmid("tasks", "--resource", "quick", "--json", address=address).stdout)
    mine = {task["id"]: task for task in listed}
    assert {task_id, detached} <= set(mine)
    assert mine[task_id]["state"] == "TASK_STATE_COMPLETED" and mine[task_id]["resource"] == "quick"
    assert {"create_time", "start_time", "end_time"} <= set(mine[task_id])
    table = qrmid("tasks", "--resource", "quick", address=address).stdout.splitlines()
    assert table[0].split()[:3] == ["TASK", "RESOURCE", "STATE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows[task_id][1:3] == ["quick", "completed"]


def test_tasks_filters_by_state_resource_and_count(address: str, task_input: Path) -> None:
    with Client(address) as client:
        running = client.start_task("busy", pulser_payload(SEQUENCE["sequence"], 1))
        queued = client.start_task("busy", pulser_payload(SEQUENCE["sequence"], 1))
        while client.task(running.id).state != pb.TASK_STATE_RUNNING:
            time.sleep(0.05)
        try:
            shown = json.loads(qrmid("tasks", "-t", "queued,running", "-r", "busy", "-o", "json",
                                     address=address).stdout)
            assert [(t["id"], t["state"], t.get("queue_position", 0)) for t in shown] == \
                [(running.id, "TASK_STATE_RUNNING", 0), (queued.id, "TASK_STATE_QUEUED", 1)]
            assert [t["id"] for t in json.loads(qrmid("tasks", "--state", "queued", "--json",
                                                      address=address).stdout)] == [queued.id]
            newest = json.loads(qrmid("tasks", "--limit", "1", "--json", address=address).stdout)
            assert [t["id"] for t in newest] == [queued.id]
            table = qrmid("tasks", "--state", "queued", address=address).stdout.splitlines()
            assert table[1].split()[:4] == [queued.id, "busy", "queued", "1"]
        finally:
            for task in (queued, running):
                client.stop_task(task.id)
    refused = qrmid("tasks", "--state", "done", address=address, check=False)
    assert refused.returncode == 2 and "done: not a task state; states are queued, running" in refused.stderr
    refused = qrmid("tasks", "--resource", "nope", address=address, check=False)
    assert refused.returncode == 1 and "NOT_FOUND: no resource named 'nope' (known: quick, slow, busy)" in \
        refused.stderr


def test_each_user_lists_only_their_tasks_and_admins_every_users(tmp_path: Path, task_input: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("".join(f'[[token]]\nname = "{name}"\ntoken = "{token}"\n{"admin = true" * (name == "boss")}\n'
                              for name, token in TOKENS.items()))
    tokens.chmod(0o600)
    for name, token in TOKENS.items():
        (tmp_path / name).write_text(token)
        (tmp_path / name).chmod(0o600)
    config = f'auth = "token"\n{RESOURCES}\n[auth]\ntokens_file = "{tokens}"\n'
    with subprocess_daemon(config) as (address, _):
        def as_user(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            return qrmid(*args, address=address, check=check,
                         env={"QRMID_AUTH": "token", "QRMID_TOKEN_FILE": str(tmp_path / name)})

        started = {name: [as_user(name, "submit", "quick", str(task_input)).stdout.strip() for _ in range(count)]
                   for name, count in (("alice", 2), ("bob", 1))}

        def listed(name: str, *args: str) -> list[tuple[str, str]]:
            return [(t["id"], t["owner"]) for t in json.loads(as_user(name, "tasks", "--json", *args).stdout)]

        assert listed("alice") == [(task_id, "alice") for task_id in started["alice"]]
        assert listed("bob") == [(started["bob"][0], "bob")]
        assert listed("boss") == [], "an admin's own tasks: none"
        assert sorted(listed("boss", "--all")) == sorted([(i, "alice") for i in started["alice"]] +
                                                         [(started["bob"][0], "bob")])
        assert listed("boss", "--user", "bob") == [(started["bob"][0], "bob")]
        for args, asked in ((("--all",), "every user's tasks"), (("--user", "bob"), "the tasks of bob")):
            refused = as_user("alice", "tasks", *args, check=False)
            assert refused.returncode == 1, refused.stdout
            assert f"PERMISSION_DENIED: only admins may list {asked}; alice is not one" in refused.stderr
        assert listed("alice", "--user", "alice") == listed("alice"), "naming oneself is allowed"
        refused = as_user("boss", "tasks", "--all", "--user", "bob", check=False)
        assert "INVALID_ARGUMENT: give either owner or all_users, not both" in refused.stderr
        table = as_user("bob", "tasks").stdout
        assert started["bob"][0] in table and not any(task_id in table for task_id in started["alice"])


def test_run_reports_each_state_on_stderr_when_not_on_a_terminal(address: str, task_input: Path) -> None:
    run = qrmid("run", "slow", str(task_input), address=address)
    task_id = run.stderr.split(":")[0].removeprefix("task ")
    first, *rest = run.stderr.splitlines()
    assert first in (f"task {task_id}: queued on slow", f"task {task_id}: running on slow"), first
    assert rest == [f"task {task_id}: running"] * first.endswith("queued on slow") + [f"task {task_id}: completed"]


def test_listings_longer_than_a_page_come_in_pages(address: str) -> None:
    with Client(address) as client:
        for _ in range(5):
            client.run("quick", pulser_payload(SEQUENCE["sequence"], 1))
        everything = [task.id for task in client.list_tasks()]
        assert len(everything) >= 5 and len(set(everything)) == len(everything)
        newest = [task.id for task in client.list_tasks(limit=3)]
    assert newest == everything[-3:], "the newest three, oldest first, over two pages"
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.QuantumResourcesStub(channel)
        pages, token = [], ""
        while True:
            page = stub.ListTasks(pb.ListTasksRequest(page_size=100, page_token=token))  # capped to the daemon's 2
            pages.append([task.id for task in page.tasks])
            if not (token := page.next_page_token):
                break
        assert [len(page) for page in pages[:-1]] == [2] * (len(pages) - 1)
        assert [task_id for page in pages for task_id in page] == everything
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListTasks(pb.ListTasksRequest(page_token="garbage"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token 'garbage' is not one a ListTasks answer gave" in refused.value.details()
    assert [t["id"] for t in json.loads(qrmid("tasks", "--json", address=address).stdout)] == everything


def _start_run(address: str, task_input: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``qrmid run slow`` in its own process, and the task id it printed on stderr once accepted."""
    process = subprocess.Popen([sys.executable, "-m", "qrmid", "run", "slow", str(task_input), *args], cwd=ROOT,
                               env={**os.environ, "QRMID_ADDRESS": address}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    first = process.stderr.readline()
    assert first.startswith("task ") and first.endswith((": queued on slow\n", ": running on slow\n")), first
    return process, first.removeprefix("task ").split(":")[0]


def test_ctrl_c_on_run_leaves_the_task_running_and_says_how_to_cancel_it(address: str, task_input: Path) -> None:
    process, task_id = _start_run(address, task_input)
    with Client(address) as client:
        assert client.task(task_id).state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert f"task {task_id} keeps running; `qrmid cancel {task_id}` stops it" in stderr
        assert "Traceback" not in stderr
        assert client.wait(task_id, timeout=60).state == pb.TASK_STATE_COMPLETED, "the task ran on"


def test_ctrl_c_on_run_cancels_the_task_when_asked(address: str, task_input: Path) -> None:
    process, task_id = _start_run(address, task_input, "--on-interrupt", "cancel")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"task {task_id}: cancelled (Ctrl-C)" in stderr
    with Client(address) as client:
        task = client.task(task_id)
    assert task.state == pb.TASK_STATE_CANCELLED and task.reason == "stopped by its owner"


def test_watch_prints_when_the_daemon_recorded_each_state(address: str, task_input: Path) -> None:
    task_id = qrmid("submit", "quick", str(task_input), address=address).stdout.strip()
    with Client(address) as client:
        task = client.wait(task_id, timeout=60)
    time.sleep(1.2)  # the watch below runs well after the task ended: its times cannot be the client's clock
    lines = [line.split() for line in qrmid("watch", task_id, address=address).stdout.splitlines()]
    assert [(words[1], words[2]) for words in lines] == \
        [(task_id, "queued"), (task_id, "running"), (task_id, "completed")]
    shown = [datetime.fromisoformat(words[0]).timestamp() for words in lines]
    recorded = [stamp.ToNanoseconds() / 1e9 for stamp in (task.create_time, task.start_time, task.end_time)]
    assert shown == pytest.approx(recorded, abs=1e-3)
    states = [json.loads(line)["state"] for line in qrmid("watch", task_id, "--json", address=address).stdout
              .splitlines()]
    assert states == ["TASK_STATE_QUEUED", "TASK_STATE_RUNNING", "TASK_STATE_COMPLETED"]


def test_cancel_and_logs_say_when_there_is_nothing_to_do(address: str, task_input: Path) -> None:
    done = qrmid("submit", "quick", str(task_input), address=address).stdout.strip()
    with Client(address) as client:
        client.wait(done, timeout=60)
        blocker = client.start_task("busy", pulser_payload(SEQUENCE["sequence"], 1))
        queued = client.start_task("busy", pulser_payload(SEQUENCE["sequence"], 1))
    cancelled = qrmid("cancel", done, address=address)
    assert f"task {done} had already ended (completed at " in cancelled.stderr and "nothing to cancel" in \
        cancelled.stderr
    assert "completed" in cancelled.stdout
    assert qrmid("logs", done, address=address).stdout == "noop\n"
    empty = qrmid("logs", queued.id, address=address)
    assert empty.stdout == "" and f"task {queued.id} has no logs: it has not run yet" in empty.stderr
    stopped = qrmid("cancel", queued.id, address=address)
    assert "already ended" not in stopped.stderr and "cancelled" in stopped.stdout
    again = qrmid("cancel", queued.id, address=address)
    assert f"task {queued.id} had already ended (cancelled at " in again.stderr
    assert f"task {queued.id} has no logs: it never ran" in qrmid("logs", queued.id, address=address).stderr
    qrmid("cancel", blocker.id, address=address)


def test_run_refuses_a_qasm_file_and_samples_one_given_with_qasm(local_daemon: str, tmp_path: Path) -> None:
    circuit = tmp_path / "bell.qasm"
    circuit.write_text('OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\n'
                       "c = measure q;\n")
    refused = qrmid("run", "local-qiskit", str(circuit), address=local_daemon, check=False)
    assert refused.returncode == 1
    assert f"{circuit} is an OpenQASM circuit, but INPUT.json is QRMI task_runner JSON" in refused.stderr
    assert f"qrmid run local-qiskit --qasm {circuit} --shots 1024" in refused.stderr
    counts = json.loads(qrmid("run", "local-qiskit", "--qasm", str(circuit), "--shots", "300",
                              address=local_daemon).stdout)["pubs"][0]["c"]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 300
    task_id = qrmid("submit", "local-qiskit", "--qasm", str(circuit), address=local_daemon).stdout.strip()
    with Client(local_daemon) as client:
        assert client.wait(task_id, timeout=120).shots == 1024
    for args, message in (((), "give INPUT.json (QRMI task_runner input) or --qasm FILE, one of them"),
                          ((str(circuit), "--qasm", str(circuit)), "give INPUT.json"),
                          ((str(circuit), "--shots", "5"), "--shots goes with --qasm")):
        usage = qrmid("run", "local-qiskit", *args, address=local_daemon, check=False)
        assert usage.returncode == 2 and message in usage.stderr, usage.stderr
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{program_id: sampler}")
    refused = qrmid("run", "local-qiskit", str(garbled), address=local_daemon, check=False)
    assert f"{garbled}: not JSON (Expecting property name" in refused.stderr


def test_help_points_to_the_docs() -> None:
    for args in ((), ("serve",)):
        shown = subprocess.run([sys.executable, "-m", "qrmid", *args, "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60, env={**os.environ, "COLUMNS": "200"}).stdout
        assert "README.md" in shown and "docs/operations.md" in shown, shown
        for page in ("docs/operations.md", "docs/python.md"):
            if page in shown:
                assert (ROOT / page).is_file()
