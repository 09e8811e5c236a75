"""libqrmid-qrmi, QRMI's C API over qrmid: the header against QRMI 0.26's published API (names, types, enum values,
struct layouts, from ``qrmi_api_0.26.json``), the installed library through ``pkg-config qrmid-qrmi``, and the
project's QRMI C programs against real daemons: the local simulators (from the environment, from a qrmi_config.json,
from the Slurm plugin's job variables; a daemon requiring leases), the IBM Quantum System emulator with a real S3
(moto) and the Pasqal Cloud emulator; one handle shared by threads; the failure paths; valgrind on the main
program."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from daemons import subprocess_daemon, write_config

from qrmid.client import Client
from qrmid.results import summarize

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
LIB_DIR = ROOT / "stubs" / "c" / "qrmi"
API = json.loads((HERE / "qrmi_api_0.26.json").read_text())
for _revision in API["neighbouring_revisions"]:
    for _enum, _members in _revision.get("enums", {}).items():
        API["enums"][_enum].update(_members)
    API["structs"].update(_revision.get("structs", {}))
    API["opaque"].extend(_revision.get("opaque", []))
    API["functions"].update(_revision.get("functions", {}))

# gRPC core keeps process-wide state that valgrind reports as possibly lost or still reachable even after
# grpc_shutdown(); only definite and indirect leaks, which would be ours, count.
VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect", "--error-exitcode=99", "--num-callers=30"]

LOCAL = """
[leases]
required = true

[[resources]]
type = "local-qiskit"
name = "local-qiskit"
slots = 2
max_qubits = 24

[[resources]]
type = "local-pulser"
name = "local-pulser"
slots = 1
"""

BELL = ('OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] meas;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\n'
        "meas[0] = measure q[0];\nmeas[1] = measure q[1];\n")


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          check=False)


def compile_c(source: Path, out: Path, prefix: Path, std: str = "c99", static: bool = False) -> None:
    """``source`` built as a QRMI user builds it: ``-I`` and ``-l`` from ``pkg-config qrmid-qrmi`` only."""
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", *(["--static"] if static else []), "qrmid-qrmi"],
                           capture_output=True, text=True, env=env, check=True).stdout.split()
    if static:  # the archive, not the shared library next to it
        flags = [str(prefix / "lib" / "libqrmid-qrmi.a") if flag == "-lqrmid-qrmi" else flag for flag in flags]
    cmd = ["cc", f"-std={std}", "-Wall", "-Wextra", "-Werror", "-D_POSIX_C_SOURCE=200809L", "-pthread", "-g",
           "-o", str(out), str(source), *flags, f"-Wl,-rpath,{prefix / 'lib'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"


def values(stdout: str) -> dict[str, str]:
    """The ``key=value`` lines a program printed (the last of each key)."""
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line and not line.startswith(" "))


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libqrmid-qrmi built out of tree with -Wall -Wextra -Werror and installed into a temp prefix."""
    for tool in ("make", "cc", "pkg-config"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: make system-packages")
    build, prefix = tmp_path_factory.mktemp("qrmi-build"), tmp_path_factory.mktemp("qrmi-prefix")
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(LIB_DIR), "-j2", f"BUILDDIR={build}",
                           f"PREFIX={prefix}", f"PYTHON={sys.executable}", "install"],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return prefix


@pytest.fixture(scope="module")
def programs(prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The project's QRMI C programs, built against the installed library."""
    out = tmp_path_factory.mktemp("qrmi-programs")
    built = {}
    for name in ("qrmi_flow", "qrmi_threads", "qrmi_edges"):
        compile_c(HERE / f"{name}.c", out / name, prefix)
        built[name] = out / name
    return built


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    """qrmid serving the local simulators, leases required."""
    with subprocess_daemon(LOCAL) as (address, _):
        yield address


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Task inputs as files: a Bell sampler, a one-qubit estimator, a Pulser sequence, a sampler that takes seconds."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import MockDevice
    from qiskit import qasm3, transpile
    from qiskit.circuit.random import random_circuit

    out = tmp_path_factory.mktemp("qrmi-inputs")
    register = Register.from_coordinates([(0.0, 0.0), (6.0, 0.0)], prefix="q")
    seq = Sequence(register, MockDevice)
    seq.declare_channel("ryd", "rydberg_global")
    seq.add(Pulse.ConstantPulse(200, 2.0, 0.0, 0.0), "ryd")
    seq.measure("ground-rydberg")
    slow = transpile(random_circuit(21, 6, measure=True, seed=11), basis_gates=["rz", "sx", "x", "cx"],
                     optimization_level=0)
    docs = {
        "sampler": {"pubs": [[BELL, None, 256]], "version": 2, "shots": 256},
        "estimator": {"pubs": [['OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\nx q[0];\n', {"Z": 1.0}]],
                      "version": 2},
        "slow": {"pubs": [[qasm3.dumps(slow), None, 100]], "version": 2, "shots": 100},
    }
    files = {name: out / f"{name}.json" for name in (*docs, "pulser")}
    for name, doc in docs.items():
        files[name].write_text(json.dumps(doc))
    files["pulser"].write_text(seq.to_abstract_repr())
    return files


def flow(programs: dict[str, Path], args: list[str], env: dict[str, str]) -> dict[str, str]:
    """qrmi_flow with ``args``; its key=value report, after checking it ran every step."""
    proc = run([str(programs["qrmi_flow"]), *args], env)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    out = values(proc.stdout)
    assert out["accessible"] == "1" and out["status"] == "online", out
    assert out["lease_acquired"] == "1" and out["released"] == "1", out
    assert out["final_status"] == "COMPLETED" and out["after_stop_status"] == "COMPLETED", out
    assert int(out["after_stop_result_bytes"]) == len(out["result"]), "task_stop kept the result"
    assert int(out["target_bytes"]) > 2 and out["target_head"] in "{[", out
    assert out["describe_name"] == out["metadata.backend_name"], out
    assert out["healthy_rc"] == "105", "qrmid reports no health: UNSUPPORTED_FUNCTION_ERROR"
    assert out["metadata_missing"] == "null", out
    return out


# --- the header --------------------------------------------------------------------------------------------------


def header_check_source() -> str:
    """A C file that compiles only if qrmi.h declares ``API``: each enum value, each struct field with its type,
    each function with its exact prototype (assigned to a pointer of that type)."""
    lines = ["#include <stddef.h>", "#include <stdint.h>", '#include "qrmi.h"',
             "#define CHECK(name, cond) typedef char name[(cond) ? 1 : -1]"]
    for enum, members in API["enums"].items():
        for name, value in members.items():
            lines.append(f"CHECK(check_{name}, (int){name} == {value} && sizeof({enum}) == sizeof({name}));")
    for struct, fields in API["structs"].items():
        lines.append(f"void use_{struct}({struct} *s);")
        body = [f"  {ctype} *p_{field} = &s->{field};\n  (void)p_{field};" for ctype, field in fields]
        lines.append(f"void use_{struct}({struct} *s) {{\n" + "\n".join(body) + "\n}")
    for name in API["opaque"]:
        lines.append(f"typedef {name} *opaque_{name};")
    for name, signature in API["callbacks"].items():
        lines.append(f"typedef {signature.replace('(*)', f'(*expected_{name})')};")
        lines.append(f"CHECK(check_{name}, sizeof({name}) == sizeof(expected_{name}));")
        lines.append(f"void use_{name}({name} f); void use_{name}({name} f) {{ expected_{name} g = f; (void)g; }}")
    for name, signature in API["functions"].items():
        ret, params = signature.split("(", 1)
        lines.append(f"{ret.strip()} (*p_{name})({params} = {name};")
    for macro in API["macros"]:
        lines.append(f"#ifndef {macro}\n#error {macro} is missing\n#endif")
    lines.append("CHECK(check_version, QRMI_VERSION == QRMI_VERSION_NUMERIC(0, 26, 0));")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("compiler", [["cc", "-std=c99", "-pedantic"], ["cc", "-std=c11"], ["c++", "-std=c++11"]])
def test_header_declares_qrmi_026_c_api(compiler: list[str], tmp_path: Path) -> None:
    source = tmp_path / "check.c"
    source.write_text(header_check_source())
    language = ["-x", "c++"] if compiler[0] == "c++" else []
    proc = run([*compiler, "-Wall", "-Wextra", "-Werror", *language, "-I", str(LIB_DIR), "-c", str(source), "-o",
                str(tmp_path / "check.o")])
    assert proc.returncode == 0, proc.stderr


def test_the_header_check_catches_a_wrong_declaration(tmp_path: Path) -> None:
    """The check above fails on a header that differs from the table (a wrong enum value, a wrong parameter type)."""
    header = (LIB_DIR / "qrmi.h").read_text()
    for wrong in (header.replace("QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR = 112", "QRMI_RETURN_CODE_TASK_NOT_FOUND_ERROR = 113"),
                  header.replace("const QrmiPayload *payload, char **task_id", "QrmiPayload *payload, char **task_id")):
        assert wrong != header
        (tmp_path / "qrmi.h").write_text(wrong)
        (tmp_path / "check.c").write_text(header_check_source())
        proc = run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path), "-c",
                    str(tmp_path / "check.c"), "-o", str(tmp_path / "check.o")])
        assert proc.returncode != 0


def test_the_library_exports_exactly_qrmis_functions(prefix: Path) -> None:
    proc = run(["nm", "-D", "--defined-only", str(prefix / "lib" / "libqrmid-qrmi.so")])
    exported = {line.split()[-1] for line in proc.stdout.splitlines() if line.split()[-1].startswith("qrmi_")}
    assert exported == set(API["functions"])


def test_a_static_build_links_from_pkg_config_static(prefix: Path, inputs: dict[str, Path], tmp_path: Path,
                                                     daemon: str) -> None:
    compile_c(HERE / "qrmi_flow.c", tmp_path / "flow", prefix, static=True)
    assert "libqrmid-qrmi" not in run(["ldd", str(tmp_path / "flow")]).stdout
    flow({"qrmi_flow": tmp_path / "flow"}, ["env", "local-qiskit", "local-qiskit", "sampler", str(inputs["sampler"])],
         {"QRMID_ADDRESS": daemon})


# --- local simulators ----------------------------------------------------------------------------------------------


def test_sampler_from_the_environment(programs: dict[str, Path], inputs: dict[str, Path], daemon: str) -> None:
    out = flow(programs, ["env", "local-qiskit", "local-qiskit", "sampler", str(inputs["sampler"])],
               {"QRMID_ADDRESS": daemon})
    assert (out["id"], out["type"], out["describe_qubits"]) == ("local-qiskit", "local-qiskit", "24")
    assert out["slots"] == "2/2" and out["metadata.simulator"] == "qiskit-aer", out
    [counts] = summarize(out["result"].encode())["pubs"][0].values()
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 256, counts


def test_estimator_and_pulser_from_a_qrmi_config_file(programs: dict[str, Path], inputs: dict[str, Path],
                                                      daemon: str, tmp_path: Path) -> None:
    config = tmp_path / "qrmi_config.json"
    config.write_text(json.dumps({"resources": [
        {"name": "local-qiskit", "type": "local-qiskit", "environment": {"QRMID_ADDRESS": daemon}},
        {"name": "local-pulser", "type": "local-pulser", "environment": {"QRMID_ADDRESS": daemon,
                                                                          "QRMI_PASQAL_CLOUD_AUTH_TOKEN": "unused"}},
    ]}))
    env = {"QRMID_ADDRESS": "unix:/nonexistent/qrmid.sock"}  # the config file's address is the one used
    out = flow(programs, ["config", str(config), "local-qiskit", "estimator", str(inputs["estimator"])], env)
    assert out["config_type"] == "local-qiskit" and out["config_env"] == "1", out
    assert math.isclose(summarize(out["result"].encode())["pubs"][0]["evs"], -1.0, abs_tol=0.05)
    out = flow(programs, ["config", str(config), "local-pulser", "pulser", str(inputs["pulser"]), "50"], env)
    assert out["id"] == "local-pulser" and out["config_env"] == "2", out
    assert sum(json.loads(out["result"])["counter"].values()) == 50, out["result"]


def test_the_jobs_resources_from_the_slurm_plugins_variables(programs: dict[str, Path], inputs: dict[str, Path],
                                                             daemon: str) -> None:
    env = {"QRMID_ADDRESS": daemon, "QRMI_JOB_QPU_RESOURCES": "local-qiskit,local-pulser",
           "QRMI_JOB_QPU_TYPES": "local-qiskit,local-pulser"}
    proc = run([str(programs["qrmi_flow"]), "service", "local-qiskit", "-", "sampler", str(inputs["sampler"])], env)
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("job_resource=")] == [
        "job_resource=local-qiskit", "job_resource=local-pulser"]
    assert values(proc.stdout)["final_status"] == "COMPLETED"


def test_failure_paths_and_the_rest_of_the_api(programs: dict[str, Path], inputs: dict[str, Path], daemon: str,
                                               tmp_path: Path) -> None:
    proc = run([str(programs["qrmi_edges"]), str(tmp_path), str(inputs["slow"])], {"QRMID_ADDRESS": daemon})
    assert proc.returncode == 0 and "failures=0" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count("\nok ") >= 40, proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("acquire", [True, False], ids=["handle-lease", "job-lease"])
def test_one_handle_shared_by_threads(programs: dict[str, Path], inputs: dict[str, Path], daemon: str,
                                      acquire: bool) -> None:
    """8 threads × 4 tasks started and polled on one handle, under the handle's lease or the job's."""
    env = {"QRMID_ADDRESS": daemon}
    if acquire:
        args = ["acquire"]
    else:
        with Client(daemon) as qrmid:
            env["local-qiskit_QRMI_JOB_ACQUISITION_TOKEN"] = qrmid.acquire("local-qiskit").token
        args = []
    proc = run([str(programs["qrmi_threads"]), "local-qiskit", "8", "4", str(inputs["sampler"]), *args], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert values(proc.stdout) == {"started": "32", "completed": "32", "distinct_ids": "32", "results": "32"}


def test_without_a_lease_the_daemon_refuses_the_task(programs: dict[str, Path], inputs: dict[str, Path],
                                                     daemon: str) -> None:
    """The leases are real: with no lease of the handle's nor the job's, a daemon that requires one says so."""
    proc = run([str(programs["qrmi_threads"]), "local-qiskit", "1", "1", str(inputs["sampler"])],
               {"QRMID_ADDRESS": daemon})
    assert proc.returncode == 1
    assert "qrmi_resource_task_start failed (109)" in proc.stderr, proc.stderr  # INVALID_INPUT_ERROR
    assert "needs a lease: call Acquire and pass its token" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_the_flow_under_valgrind(programs: dict[str, Path], inputs: dict[str, Path], daemon: str) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is missing: make system-packages")
    proc = run([*VALGRIND, str(programs["qrmi_flow"]), "env", "local-qiskit", "local-qiskit", "sampler",
                str(inputs["sampler"])], {"QRMID_ADDRESS": daemon}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert values(proc.stdout)["final_status"] == "COMPLETED"
    assert "ERROR SUMMARY: 0 errors" in proc.stderr, proc.stderr[-6000:]
    assert "definitely lost: 0 bytes" in proc.stderr or "All heap blocks were freed" in proc.stderr


@pytest.mark.slow
def test_threads_under_valgrind(programs: dict[str, Path], inputs: dict[str, Path], daemon: str) -> None:
    proc = run([*VALGRIND, str(programs["qrmi_threads"]), "local-qiskit", "3", "2", str(inputs["sampler"]), "acquire"],
               {"QRMID_ADDRESS": daemon}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert values(proc.stdout)["completed"] == "6"
    assert "ERROR SUMMARY: 0 errors" in proc.stderr, proc.stderr[-6000:]


@pytest.mark.slow
def test_the_failure_paths_under_valgrind(programs: dict[str, Path], inputs: dict[str, Path], daemon: str,
                                          tmp_path: Path) -> None:
    proc = run([*VALGRIND, str(programs["qrmi_edges"]), str(tmp_path), str(inputs["slow"])],
               {"QRMID_ADDRESS": daemon}, timeout=900)
    assert proc.returncode == 0 and "failures=0" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "ERROR SUMMARY: 0 errors" in proc.stderr, proc.stderr[-6000:]


# --- the README section -------------------------------------------------------------------------------------------


def test_the_readme_section_runs_as_written(daemon: str, tmp_path: Path) -> None:
    """stubs/c/README.md's libqrmid-qrmi section: its C block is myjob.c, its shell blocks run in order in a copy of
    the tree, with HOME a scratch directory, against a daemon that requires leases."""
    readme = (ROOT / "stubs" / "c" / "README.md").read_text()
    section = readme.split("\n## QRMI's C API (libqrmid-qrmi)\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)
    assert [language for language, _ in blocks] == ["sh", "c", "sh"]
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "stubs" / "c", tree / "stubs" / "c", ignore=shutil.ignore_patterns("build"))
    (tree / "myjob.c").write_text(blocks[1][1])
    env = {"HOME": str(tmp_path / "home"), "QRMID_ADDRESS": daemon}
    for language, code in blocks:
        if language == "sh":
            proc = subprocess.run(["bash", "-e", "-c", code], cwd=tree, capture_output=True, text=True, timeout=900,
                                  env={**os.environ, **env}, check=False)
            assert proc.returncode == 0, f"{code}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    [counts] = summarize(proc.stdout.strip().encode())["pubs"][0].values()
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 100, counts


# --- emulated vendor resources -------------------------------------------------------------------------------------


def daemon_config(resources: list[dict[str, Any]], path: Path) -> str:
    """A daemon config text with ``resources`` (the socket and journal are added by ``subprocess_daemon``)."""
    text = tomli_w.dumps({"resources": resources})
    write_config(path, text)
    return text


@pytest.mark.slow
def test_ibm_quantum_system_emulator(programs: dict[str, Path], tmp_path: Path) -> None:
    """An ibm-quantum-system resource served by qrmid from the IBM Quantum System API emulator and a real S3:
    the program holds no IBM credential, only the daemon's address."""
    from ibm_services import ibm_services
    from qiskit import QuantumCircuit, qasm3, transpile
    from qiskit_ibm_runtime.fake_provider import FakePerth

    key, crn, bucket = "c-qrmi-key", "crn:v1:local:c-qrmi", "c-qrmi-jobs"
    emulator_config = tmp_path / "emulator.toml"
    emulator_config.write_text(f'api_keys = ["{key}"]\nservice_crn = "{crn}"\n[[backends]]\nname = "perth"\n'
                               'device = "perth"\nseed = 7\nnoise = false\n')
    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    isa = transpile(circuit, FakePerth(), optimization_level=1, seed_transpiler=1)
    (tmp_path / "bell.json").write_text(json.dumps({"pubs": [[qasm3.dumps(isa), None, 200]], "version": 2,
                                                    "support_qiskit": True}))
    with ibm_services(emulator_config, bucket) as (emulator, s3):
        resource = {"type": "ibm-quantum-system", "name": "perth", "poll_interval": 0.05, "status_interval": 0.2,
                    "QRMI_IBM_QS_ENDPOINT": emulator.url, "QRMI_IBM_QS_IAM_ENDPOINT": emulator.url,
                    "QRMI_IBM_QS_IAM_APIKEY": key, "QRMI_IBM_QS_SERVICE_CRN": crn,
                    "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "k", "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": "s",
                    "QRMI_IBM_QS_S3_ENDPOINT": s3.url, "QRMI_IBM_QS_S3_BUCKET": bucket,
                    "QRMI_IBM_QS_S3_REGION": "us-east-1"}
        with subprocess_daemon(daemon_config([resource], tmp_path / "qrmid.toml")) as (address, _):
            with Client(address) as qrmid:
                wait_online(qrmid, "perth")
            out = flow(programs, ["env", "perth", "ibm-quantum-system", "sampler", str(tmp_path / "bell.json")],
                       {"QRMID_ADDRESS": address})
    assert out["type"] == "ibm-quantum-system"
    assert int(out["target_bytes"]) > 1000, out
    [counts] = summarize(out["result"].encode())["pubs"][0].values()
    assert sum(counts.values()) == 200 and set(counts) <= {"00", "11"}, counts


@pytest.mark.slow
def test_pasqal_cloud_emulator(programs: dict[str, Path], tmp_path: Path) -> None:
    """A pasqal-cloud resource served by qrmid from the Pasqal Cloud emulator, a Pulser sequence built on the
    device the emulator publishes."""
    from emulators.pasqal_fixtures import CLIENT_ID, CLIENT_SECRET, PROJECT, fetch_device, running_emulator, sequence

    with running_emulator(tmp_path) as pasqal:
        program = sequence(fetch_device(pasqal.url, "FRESNEL"), atoms=2, parametrized=False).to_abstract_repr()
        (tmp_path / "sequence.json").write_text(program)
        resource = {"type": "pasqal-cloud", "name": "fresnel", "device_type": "FRESNEL", "poll_interval": 0.1,
                    "status_interval": 0.2, "QRMI_PASQAL_CLOUD_PROJECT_ID": PROJECT,
                    "QRMI_PASQAL_CLOUD_BASE_URL": pasqal.url,
                    "QRMI_PASQAL_CLOUD_AUTH_ENDPOINT": f"{pasqal.url}/oauth/token",
                    "QRMI_PASQAL_CLOUD_CLIENT_ID": CLIENT_ID, "QRMI_PASQAL_CLOUD_CLIENT_SECRET": CLIENT_SECRET}
        with subprocess_daemon(daemon_config([resource], tmp_path / "qrmid.toml")) as (address, _):
            with Client(address) as qrmid:
                wait_online(qrmid, "fresnel")
            out = flow(programs, ["env", "fresnel", "pasqal-cloud", "pulser", str(tmp_path / "sequence.json"), "40"],
                       {"QRMID_ADDRESS": address})
        batches = [batch for batch in pasqal.record()["batches"] if batch["device_type"] == "FRESNEL"]
    assert out["type"] == "pasqal-cloud"
    assert sum(json.loads(out["result"])["counter"].values()) == 40, out["result"]
    assert len(batches) == 1, batches


def wait_online(qrmid: Client, name: str, timeout: float = 30.0) -> None:
    """Until the daemon's first status check of ``name`` found it online."""
    import time

    deadline = time.monotonic() + timeout
    while qrmid.resource(name).status != 1:  # RESOURCE_STATUS_ONLINE
        assert time.monotonic() < deadline, f"{name} not online: {qrmid.resource(name).status_reason}"
        time.sleep(0.1)
