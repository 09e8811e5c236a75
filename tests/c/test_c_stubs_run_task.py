"""qrmid_run_task(), the C runtime's one-call run, against real daemons: a task to its end with its result, a
refusal, a re-attach by request id, a cancelled task, a run under valgrind, and a cluster member killed with
SIGKILL in the middle of the stream."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cstubs_support import VALGRIND_ARGS, pkg_config
from daemons import subprocess_daemon
from postgres import Database
from test_client_failover import qrmid
from test_run_task_cluster import two_members

from qrmid.client import Client

NOOP = ('[[resources]]\ntype = "noop"\nname = "fast"\nslots = 2\ndelay_seconds = 0.05\n'
        '[[resources]]\ntype = "noop"\nname = "slow"\nslots = 1\ndelay_seconds = 2\n')


@pytest.fixture(scope="module")
def run_probe(c_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/c/qrmid_run_probe.c built against the installed library via pkg-config."""
    out = tmp_path_factory.mktemp("c-run-probe") / "qrmid_run_probe"
    proc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-o", str(out),
                           str(Path(__file__).parent / "qrmid_run_probe.c"), *pkg_config(c_prefix, "--cflags", "--libs"),
                           f"-Wl,-rpath,{c_prefix / 'lib'}"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def noop() -> Iterator[str]:
    with subprocess_daemon(NOOP) as (address, _):
        yield address


def probe(run_probe: Path, *args: str, wrapper: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*wrapper, str(run_probe), *args], capture_output=True, text=True, timeout=600,
                          check=False)


def states(stdout: str) -> list[tuple[str, str]]:
    """The (task id, state) pairs the callback was given."""
    return [tuple(line.split()[1:3]) for line in stdout.splitlines() if line.startswith("state ")]


def test_a_task_runs_to_its_end_in_one_call(run_probe: Path, noop: str) -> None:
    proc = probe(run_probe, noop, "fast")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = states(proc.stdout)
    task_id = seen[0][0]
    order = ["TASK_STATE_QUEUED", "TASK_STATE_RUNNING", "TASK_STATE_COMPLETED"]
    assert seen[-1] == (task_id, "TASK_STATE_COMPLETED") and {i for i, _ in seen} == {task_id}, seen
    assert sorted({state for _, state in seen}, key=order.index) == [state for _, state in seen], "each state once, in order"
    ended, result = proc.stdout.splitlines()[-2:]
    assert ended == "ended TASK_STATE_COMPLETED "
    content_type, size, data = result.removeprefix("result ").split(" ", 2)
    assert content_type == "application/json" and int(size) == len(data) and json.loads(data) == {"task": task_id}


def test_a_refused_request_is_its_status(run_probe: Path, noop: str) -> None:
    proc = probe(run_probe, noop, "nowhere")
    assert proc.returncode == 1
    assert proc.stdout.startswith("error NOT_FOUND ") and "nowhere" in proc.stdout, proc.stdout
    assert not states(proc.stdout)


def test_the_same_request_id_reattaches_to_the_task(run_probe: Path, noop: str) -> None:
    first = probe(run_probe, noop, "fast", "c-probe-again")
    again = probe(run_probe, noop, "fast", "c-probe-again")
    assert first.returncode == again.returncode == 0, first.stdout + again.stdout
    task_id = states(first.stdout)[0][0]
    assert states(again.stdout) == [(task_id, "TASK_STATE_COMPLETED")], "the ended task, not a new one"
    assert first.stdout.splitlines()[-1] == again.stdout.splitlines()[-1], "the same result"


def test_a_cancelled_task_ends_the_run_without_error(run_probe: Path, noop: str) -> None:
    process = subprocess.Popen([str(run_probe), noop, "slow"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    task_id = process.stdout.readline().split()[1]
    with Client(noop) as client:
        client.stop_task(task_id)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert rest.splitlines()[-1] == "ended TASK_STATE_CANCELLED stopped by its owner", rest


def test_a_run_under_valgrind(run_probe: Path, noop: str) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is missing: apt-get install valgrind")
    proc = probe(run_probe, noop, "fast", wrapper=("valgrind", *VALGRIND_ARGS))
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stdout.splitlines()[-2] == "ended TASK_STATE_COMPLETED "
    assert "ERROR SUMMARY: 0 errors" in proc.stderr


def test_a_run_goes_on_at_another_member_when_its_member_is_killed(run_probe: Path, database: Database) -> None:
    with two_members(database) as (a, b, first):
        process = subprocess.Popen([str(run_probe), f"unix:{a},unix:{b}", "noop"], stdout=subprocess.PIPE,
                                   text=True)
        assert process.stdout is not None
        queued = process.stdout.readline().split()
        first.kill()
        first.wait()
        resumed = qrmid("admin", "resume", "noop", address=f"unix:{b}")
        assert resumed.returncode == 0, resumed.stderr
        rest, _ = process.communicate(timeout=120)
        with Client(f"unix:{b}") as client:
            kept = [task.id for task in client.list_tasks()]
    assert process.returncode == 0, rest
    seen = [tuple(queued[1:3]), *states(rest)]
    task_id = seen[0][0]
    assert seen[0] == (task_id, "TASK_STATE_QUEUED") and seen[-1] == (task_id, "TASK_STATE_COMPLETED")
    assert len({state for _, state in seen}) == len(seen) and {i for i, _ in seen} == {task_id}, seen
    assert json.loads(rest.splitlines()[-1].split(" ", 3)[3]) == {"task": task_id}
    assert kept == [task_id], "the same task, not a second one"

