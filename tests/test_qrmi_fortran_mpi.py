"""The Fortran module's example and the MPI example, built with gfortran and Open MPI against libqrmid-qrmi, run
against a real qrmid serving local-qiskit and local-pulser that requires a lease for every task, in the environment
the Slurm plugin gives a job (resource lists, the lease token); the MPI ranks run with mpirun as root allows. Their
tasks are checked with the daemon itself: which lease they ran under, and that their results outlive task_stop."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import short_dir, subprocess_daemon
from qrmi_hpc_programs import MPIRUN, ROOT, Programs, build_programs, counts, mpi_reports, without_job

from qrmid import examples
from qrmid.client import Client
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

CONFIG = """
[leases]
required = true

[[resources]]
type = "local-qiskit"
name = "local-qiskit"
slots = 2
max_qubits = 8

[[resources]]
type = "local-pulser"
name = "local-pulser"
slots = 1

# Holds each task for ten minutes, without using CPU: a task to cancel while the program waits.
[[resources]]
type = "noop"
name = "slow-qpu"
delay_seconds = 600
"""

VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect", "--error-exitcode=99", "--num-callers=30"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def programs() -> Iterator[Programs]:
    scratch = short_dir()
    yield build_programs(scratch)
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    with subprocess_daemon(CONFIG) as (address, _):
        yield address


@pytest.fixture(scope="module")
def client(daemon: str) -> Iterator[Client]:
    with Client(daemon) as qrmid:
        yield qrmid


@pytest.fixture
def job(daemon: str, client: Client) -> Iterator[tuple[dict[str, str], dict[str, pb.Lease]]]:
    """A job's environment as the Slurm plugin makes it: both resources leased, their names, types and tokens."""
    leases = {name: client.acquire(name, slurm_job_id="4242") for name in ("local-qiskit", "local-pulser")}
    env = {**without_job(dict(os.environ)), "QRMID_ADDRESS": daemon, "QRMI_JOB_ID": "4242",
           "QRMI_JOB_QPU_RESOURCES": "local-qiskit,local-pulser", "QRMI_JOB_QPU_TYPES": "local-qiskit,local-pulser",
           **{f"{name}_QRMI_JOB_ACQUISITION_TOKEN": lease.token for name, lease in leases.items()}}
    yield env, leases
    for lease in leases.values():
        client.release(lease.token)


def run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def fortran_task(stdout: str) -> tuple[str, str, str]:
    """(task id, state, result) from what the Fortran example prints."""
    lines = stdout.splitlines()
    assert lines[0].startswith("task ") and lines[1].startswith("state "), stdout
    return lines[0].removeprefix("task "), lines[1].removeprefix("state "), "\n".join(lines[2:])


def test_fortran_runs_a_bell_sampler_on_the_jobs_first_resource_under_its_lease(
        programs: Programs, job: tuple[dict[str, str], dict[str, pb.Lease]], client: Client) -> None:
    env, leases = job
    proc = run([str(programs.fortran)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    task_id, state, result = fortran_task(proc.stdout)
    assert state == "Completed"
    bell = counts(result)
    assert set(bell) <= {"00", "11"} and sum(bell.values()) == 1000, bell
    task = client.task(task_id)  # stopped by the program, yet still there with its result
    assert (task.resource, task.state, task.lease_id) == ("local-qiskit", pb.TASK_STATE_COMPLETED, leases["local-qiskit"].id)
    assert client.result(task_id).decode() == result


def test_fortran_runs_a_pulser_sequence_and_an_estimator_from_json_files(
        programs: Programs, job: tuple[dict[str, str], dict[str, pb.Lease]], tmp_path: Path) -> None:
    env, _ = job
    sequence = tmp_path / "sequence.json"
    sequence.write_text(json.dumps(examples.load("pulser")["sequence"]))
    proc = run([str(programs.fortran), "local-pulser", "pulser", str(sequence), "50"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, state, result = fortran_task(proc.stdout)
    assert state == "Completed"
    counter = json.loads(result)["counter"]
    assert sum(counter.values()) == 50 and all(set(key) <= {"0", "1"} and len(key) == 2 for key in counter), counter

    estimator = tmp_path / "estimator.json"
    estimator.write_text(json.dumps(examples.load("estimator")["parameters"]))
    proc = run([str(programs.fortran), "local-qiskit", "estimator", str(estimator)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, state, result = fortran_task(proc.stdout)
    assert state == "Completed"
    evs = summarize(result.encode())["pubs"][0]["evs"]
    # <IZ> + 0.5 <XX> for ry(theta) then cx: 1 at theta = 0; 0.5 at theta = pi/2
    assert evs == pytest.approx([1.0, 0.5], abs=0.1), evs


def test_fortran_reports_each_failure_with_the_librarys_code_and_message(
        programs: Programs, job: tuple[dict[str, str], dict[str, pb.Lease]], tmp_path: Path) -> None:
    env, _ = job
    no_job = {name: value for name, value in env.items() if not name.startswith("QRMI_JOB_QPU")}
    proc = run([str(programs.fortran)], no_job)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "opening  failed (QRMI return code 102): no resource name: pass one, or run in a job started with --qpu" \
        in proc.stderr

    proc = run([str(programs.fortran), "elsewhere"], env)
    assert proc.returncode == 2
    assert "opening elsewhere failed (QRMI return code 104): the job has no resource type for elsewhere" in proc.stderr

    ghost = {**env, "QRMI_JOB_QPU_RESOURCES": "ghost", "QRMI_JOB_QPU_TYPES": "local-qiskit"}
    proc = run([str(programs.fortran)], ghost)
    assert proc.returncode == 2
    assert "leasing ghost failed (QRMI return code 111): " in proc.stderr, proc.stderr  # the job has no lease on it
    assert "no resource named 'ghost'" in proc.stderr.split("return code 111): ", 1)[1]

    broken = tmp_path / "broken.json"
    broken.write_text('{"pubs": [["OPENQASM 3.0; qubit[2] q; h q[5];", null, 10]], "version": 2}')
    proc = run([str(programs.fortran), "local-qiskit", "sampler", str(broken)], env)
    assert proc.returncode == 2
    assert "starting a sampler task on local-qiskit failed (QRMI return code 109): " in proc.stderr, proc.stderr

    proc = run([str(programs.fortran)], {**env, "local-qiskit_QRMI_JOB_ACQUISITION_TOKEN": "not-a-lease-token"})
    assert proc.returncode == 2
    assert "starting a sampler task on local-qiskit failed (QRMI return code " in proc.stderr, proc.stderr
    assert "lease" in proc.stderr.split("failed (QRMI return code ", 1)[1]


def test_fortran_outside_a_job_takes_a_lease_for_its_task_and_releases_it(
        programs: Programs, daemon: str, client: Client) -> None:
    env = {**without_job(dict(os.environ)), "QRMID_ADDRESS": daemon}
    before = {lease.id for lease in client.list_leases()}
    proc = run([str(programs.fortran), "local-qiskit"], {**env, "QRMI_JOB_QPU_RESOURCES": "local-qiskit",
                                                         "QRMI_JOB_QPU_TYPES": "local-qiskit"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    task_id, state, _ = fortran_task(proc.stdout)
    lease_id = client.task(task_id).lease_id
    assert state == "Completed" and lease_id not in before | {""}
    assert {lease.id for lease in client.list_leases()} == before


def test_fortran_reports_a_task_cancelled_while_it_waits(
        programs: Programs, daemon: str, client: Client, tmp_path: Path) -> None:
    lease = client.acquire("slow-qpu")
    sequence = tmp_path / "sequence.json"
    sequence.write_text(json.dumps(examples.load("pulser")["sequence"]))
    # qrmid's noop resources have no QRMI type: the job names one, which the daemon does not use
    env = {**without_job(dict(os.environ)), "QRMID_ADDRESS": daemon, "QRMI_JOB_QPU_RESOURCES": "slow-qpu",
           "QRMI_JOB_QPU_TYPES": "pasqal-local", "QRMI_JOB_ACQUISITION_TOKEN": lease.token}
    program = subprocess.Popen([str(programs.fortran), "slow-qpu", "pulser", str(sequence), "10"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert program.stdout is not None
        task_id = program.stdout.readline().strip().removeprefix("task ")  # flushed before the program waits
        assert client.task(task_id).resource == "slow-qpu"
        time.sleep(1)  # the program polls the running task meanwhile
        assert program.poll() is None
        client.stop_task(task_id)
        stdout, stderr = program.communicate(timeout=60)
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
        client.release(lease.token)
    assert program.returncode == 1, stdout + stderr
    assert stdout == "state Cancelled\n"
    assert "qrmi_example:" not in stderr, stderr  # no call failed
    assert client.task(task_id).state == pb.TASK_STATE_CANCELLED


def test_every_module_procedure_against_the_daemon(programs: Programs, daemon: str, client: Client,
                                                   tmp_path: Path) -> None:
    """tests/qrmi_fortran_probe.f90, compiled with the module and linked with the library, calls each procedure."""
    env = {**os.environ, "PKG_CONFIG_PATH": str(programs.prefix / "lib" / "pkgconfig")}
    libs = subprocess.run(["pkg-config", "--libs", "qrmid-qrmi"], capture_output=True, text=True, env=env,
                          check=True).stdout.split()
    build = subprocess.run(["gfortran", "-std=f2008", "-Wall", "-Werror", f"-I{programs.fortran.parent}", "-o",
                            str(tmp_path / "probe"), str(Path(__file__).parent / "qrmi_fortran_probe.f90"),
                            str(programs.fortran.parent / "qrmid_qrmi.o"), *libs,
                            f"-Wl,-rpath,{programs.prefix / 'lib'}"], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    before = {lease.id for lease in client.list_leases()}
    proc = run([str(tmp_path / "probe")], {**without_job(dict(os.environ)), "QRMID_ADDRESS": daemon,
                                          "QRMI_JOB_QPU_RESOURCES": "local-qiskit,local-pulser",
                                          "QRMI_JOB_QPU_TYPES": "local-qiskit,local-pulser"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert out[:6] == ["count 2", "second local-pulser", "third []", "type 101", "untyped -1",
                       "unopened 101 the resource is not open: call open first"], out
    assert out[6] == "ghost accessible F 0"  # a resource the daemon does not have: false, not an error
    assert out[7] == "accessible T 0" and out[9] == "started 0", out
    acquired, code, token_length = out[8].split()
    assert (acquired, code) == ("acquired", "0") and int(token_length) > 0, out
    task_id = out[10].removeprefix("task ")
    assert re.fullmatch(rf"waited 107 (Queued|Running) task {task_id} is still \1 after the time given to wait",
                        out[11]), out
    assert out[12].startswith("early result 107 "), out  # the library's reason: the task has not completed
    assert out[13:16] == ["stopped 0", "status 0 Cancelled", "logs 0"], out
    assert out[16].startswith("unknown task 112 ") and "no-such-task" in out[16], out
    assert out[17:] == ["released 0", "open after close F", "closed 101 the resource is not open: call open first"]
    task = client.task(task_id)
    assert task.state == pb.TASK_STATE_CANCELLED and task.lease_id not in before | {""}
    assert {lease.id for lease in client.list_leases()} == before  # released


def test_fortran_program_is_valgrind_clean(programs: Programs, job: tuple[dict[str, str], dict[str, pb.Lease]]) -> None:
    env, leases = job
    # valgrind passes on no variable whose name is not an identifier, such as local-qiskit_QRMI_JOB_...: the job's
    # lease goes in QRMI_JOB_ACQUISITION_TOKEN, which the library reads next
    env["QRMI_JOB_ACQUISITION_TOKEN"] = leases["local-qiskit"].token
    proc = run([*VALGRIND, str(programs.fortran)], env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    assert fortran_task(proc.stdout)[1] == "Completed"
    assert "ERROR SUMMARY: 0 errors" in proc.stderr, proc.stderr[-6000:]


# The module's QrmiPayload variants and constants, printed by a Fortran program and by a C program from qrmi.h.
NAMES = [f"QRMI_RETURN_CODE_{name}" for name in (
    "SUCCESS", "ERROR", "NULL_POINTER_ERROR", "ENV_VAR_NOT_SET_ERROR", "PARSE_ERROR",
    "UNSUPPORTED_RESOURCE_TYPE_ERROR", "UNSUPPORTED_FUNCTION_ERROR", "UNSUPPORTED_PAYLOAD_ERROR",
    "TASK_NOT_READY_ERROR", "MISSING_CONFIG_KEY_ERROR", "INVALID_INPUT_ERROR", "RESOURCE_NOT_FOUND_ERROR",
    "TASK_NOT_FOUND_ERROR", "AUTHENTICATION_FAILED_ERROR", "INVALID_CONFIG_ERROR")] + [
    f"QRMI_TASK_STATUS_{name}" for name in ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")] + [
    f"QRMI_RESOURCE_TYPE_{name}" for name in (
        "IBM_QUANTUM_SYSTEM", "QISKIT_RUNTIME_SERVICE", "IBM_QUANTUM_COMPUTE_SERVICE", "PASQAL_CLOUD", "PASQAL_LOCAL",
        "ALICE_BOB_FELIS", "IQM_SERVER", "OQTOPUS", "LOCAL_QISKIT", "LOCAL_PULSER")] + [
    "QRMI_PAYLOAD_QISKIT_PRIMITIVE", "QRMI_PAYLOAD_PASQAL_CLOUD"]
LAYOUT_C = """#include <stddef.h>
#include <stdio.h>
#include "qrmi.h"
int main(void)
{
  printf("%zu %zu %zu %zu %zu\\n", sizeof(QrmiPayload), offsetof(QrmiPayload, QISKIT_PRIMITIVE.input),
         offsetof(QrmiPayload, QISKIT_PRIMITIVE.program_id), offsetof(QrmiPayload, PASQAL_CLOUD.sequence),
         offsetof(QrmiPayload, PASQAL_CLOUD.job_runs));
""" + "".join(f'  printf("%d\\n", (int){name});\n' for name in NAMES) + "  return 0;\n}\n"
LAYOUT_FORTRAN = """program layout
  use, intrinsic :: iso_c_binding, only: c_intptr_t, c_loc, c_sizeof
  use qrmid_qrmi
  implicit none
  type(qrmi_qiskit_primitive_payload), target :: qiskit
  type(qrmi_pasqal_cloud_payload), target :: pasqal
  print '(5(i0, 1x))', c_sizeof(qiskit), at(c_loc(qiskit%input)) - at(c_loc(qiskit)), &
    at(c_loc(qiskit%program_id)) - at(c_loc(qiskit)), at(c_loc(pasqal%sequence)) - at(c_loc(pasqal)), &
    at(c_loc(pasqal%job_runs)) - at(c_loc(pasqal))
  if (c_sizeof(pasqal) /= c_sizeof(qiskit)) error stop 'the two variants differ in size'
""" + "".join(f"  print '(i0)', {name}\n" for name in NAMES) + """contains
  integer(c_intptr_t) function at(pointer)
    use, intrinsic :: iso_c_binding, only: c_ptr
    type(c_ptr), intent(in) :: pointer
    at = transfer(pointer, at)
  end function at
end program layout
"""


def test_the_modules_payloads_and_constants_match_qrmi_h(programs: Programs, tmp_path: Path) -> None:
    """The module's payload types lay out their fields where qrmi.h's QrmiPayload has them, and are at least as large;
    every constant the module declares has qrmi.h's value."""
    env = {**os.environ, "PKG_CONFIG_PATH": str(programs.prefix / "lib" / "pkgconfig")}
    cflags, libs = (subprocess.run(["pkg-config", option, "qrmid-qrmi"], capture_output=True, text=True, env=env,
                                   check=True).stdout.split() for option in ("--cflags", "--libs"))
    (tmp_path / "layout.c").write_text(LAYOUT_C)
    (tmp_path / "layout.f90").write_text(LAYOUT_FORTRAN)
    builds = [["cc", "-std=c11", "-Wall", "-Werror", *cflags, "-o", "layout_c", "layout.c"],
              ["gfortran", "-std=f2008", "-Wall", "-Werror", f"-I{programs.fortran.parent}", "-o", "layout_f",
               "layout.f90", str(programs.fortran.parent / "qrmid_qrmi.o"), *libs,
               f"-Wl,-rpath,{programs.prefix / 'lib'}"]]
    for build in builds:
        proc = subprocess.run(build, cwd=tmp_path, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    c_lines = subprocess.run(["./layout_c"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split("\n")
    f_lines = subprocess.run(["./layout_f"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split("\n")
    c_size, *c_offsets = map(int, c_lines[0].split())
    f_size, *f_offsets = map(int, f_lines[0].split())
    assert f_offsets == c_offsets and f_size >= c_size, (f_lines[0], c_lines[0])
    assert dict(zip(NAMES, f_lines[1:], strict=False)) == dict(zip(NAMES, c_lines[1:], strict=False))


def check_ranks(stdout: str, ranks: int, tasks_per_rank: int) -> list[str]:
    """Every rank's tasks completed, reported in rank order with 100 * (rank + 1) Bell shots each; their ids."""
    reports = mpi_reports(stdout)
    assert [report.rank for report in reports] == [r for r in range(ranks) for _ in range(tasks_per_rank)], stdout
    for report in reports:
        assert report.state == "Completed", report
        bell = counts(report.result)
        assert set(bell) <= {"00", "11"} and sum(bell.values()) == 100 * (report.rank + 1), (report.rank, bell)
    ids = [report.task_id for report in reports]
    assert len(set(ids)) == len(ids)
    return ids


def test_mpi_ranks_run_their_tasks_under_one_lease_rank_0_acquires_and_releases(
        programs: Programs, daemon: str, client: Client) -> None:
    env = {**without_job(dict(os.environ)), "QRMID_ADDRESS": daemon}
    before = {lease.id for lease in client.list_leases()}
    proc = run([*MPIRUN, "-np", "4", str(programs.mpi), "local-qiskit", "local-qiskit", "2"], env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = check_ranks(proc.stdout, 4, 2)
    lease_ids = {client.task(task_id).lease_id for task_id in ids}
    assert len(lease_ids) == 1 and lease_ids != {""}, lease_ids
    assert lease_ids.isdisjoint(before)
    assert {lease.id for lease in client.list_leases()} == before  # rank 0 released its lease


def test_mpi_ranks_use_the_jobs_lease_when_the_job_has_one(
        programs: Programs, job: tuple[dict[str, str], dict[str, pb.Lease]], client: Client) -> None:
    env, leases = job
    proc = run([*MPIRUN, "-np", "2", str(programs.mpi)], env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = check_ranks(proc.stdout, 2, 2)
    assert Counter(client.task(task_id).lease_id for task_id in ids) == {leases["local-qiskit"].id: 4}
    assert leases["local-qiskit"].id in {lease.id for lease in client.list_leases()}  # the job's lease stays


def test_mpi_gathers_each_ranks_failure_on_rank_0(
        programs: Programs, job: tuple[dict[str, str], dict[str, pb.Lease]]) -> None:
    env, _ = job
    env["local-qiskit_QRMI_JOB_ACQUISITION_TOKEN"] = "not-a-lease-token"
    proc = run([*MPIRUN, "-np", "3", str(programs.mpi), "local-qiskit", "local-qiskit", "1"], env, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reports = mpi_reports(proc.stdout)
    assert [(report.rank, report.task_id, report.state) for report in reports] == [
        (rank, "-", "NotStarted") for rank in range(3)], proc.stdout
    assert len({report.result for report in reports}) == 1 and "lease" in reports[0].result, reports


def test_the_readmes_run_as_written(daemon: str, tmp_path: Path) -> None:
    """stubs/fortran/README.md then stubs/mpi/README.md, each page's shell blocks in one shell as a reader types them,
    in a copy of the tree with HOME a scratch directory, against the daemon that requires leases; the Fortran block is
    myjob.f90. mpirun runs as root here, which Open MPI allows through its environment."""
    tree = tmp_path / "tree"
    for part in ("stubs/c", "stubs/fortran", "stubs/mpi", "qrmid/examples"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("build", "__pycache__"))
    env = {**without_job(dict(os.environ)), "HOME": str(tmp_path / "home"), "QRMID_ADDRESS": daemon,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    outputs = {}
    for page in ("fortran", "mpi"):
        blocks = re.findall(r"^```(\w+)\n(.*?)^```$", (ROOT / "stubs" / page / "README.md").read_text(),
                            flags=re.DOTALL | re.MULTILINE)
        for language, code in blocks:
            if language == "fortran":
                (tree / "myjob.f90").write_text(code)
            else:
                assert language in ("sh", "text"), language
        script = "".join(code for language, code in blocks if language == "sh")
        proc = subprocess.run(["bash", "-e", "-c", script], cwd=tree, capture_output=True, text=True, timeout=900,
                              env=env, check=False)
        assert proc.returncode == 0, f"{page}:\n{script}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        outputs[page] = proc.stdout

    results = [line for line in outputs["fortran"].splitlines() if line.startswith('{"__type__": "PrimitiveResult"')]
    assert len(results) == 3, outputs["fortran"]  # myjob's, then the example's Bell sampler and estimator
    assert sum(summarize(results[0].encode())["pubs"][0]["c"].values()) == 100
    assert outputs["fortran"].count("state Completed") == 3, outputs["fortran"]
    assert len([line for line in outputs["fortran"].splitlines() if line.startswith('{"counter"')]) == 1
    assert [(report.rank, report.state) for report in mpi_reports(outputs["mpi"])] == [
        (rank, "Completed") for rank in range(4) for _ in range(2)], outputs["mpi"]
