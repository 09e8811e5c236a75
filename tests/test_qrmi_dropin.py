"""The ``qrmid.qrmi`` drop-in: the project's QRMI programs (``tests/qrmi_programs/``) run as subprocesses against a
real daemon, in the environment the Slurm plugin gives a job (resource lists and lease tokens; the daemon requires
leases); the drop-in's public API compared with the ``qrmi`` package itself; ``qrmid-task-runner``; the drop-in's error
mapping and shared handles."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import qrmi  # the real package (test extras): the drop-in's reference
from daemons import subprocess_daemon
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

import qrmid.qrmi
from qrmid import examples
from qrmid.client import Client, pulser_payload
from qrmid.qrmi import (
    ConfigError,
    EnvVarNotSetError,
    InvalidInputError,
    Payload,
    QRMIService,
    QuantumResource,
    ResourceType,
    TaskNotFoundError,
    TaskStatus,
    UnsupportedPayloadError,
    get_job_qpu_resources_and_types,
)
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

PROGRAMS = Path(__file__).parent / "qrmi_programs"
RESOURCES = {"local-qiskit": "local-qiskit", "local-pulser": "local-pulser"}
CONFIG = """
[leases]
required = true

[[resources]]
type = "local-qiskit"
name = "local-qiskit"
max_qubits = 5

[[resources]]
type = "local-pulser"
name = "local-pulser"
slots = 1
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    with subprocess_daemon(CONFIG) as (address, _):
        yield address


@pytest.fixture(scope="module")
def job_env(daemon: str) -> Iterator[dict[str, str]]:
    """A job's environment as spank_qrmid exports it, with a lease on each resource."""
    with Client(daemon) as qrmid:
        tokens = {name: qrmid.acquire(name).token for name in RESOURCES}
        yield {"QRMID_ADDRESS": daemon, "QRMI_JOB_QPU_RESOURCES": ",".join(RESOURCES),
               "QRMI_JOB_QPU_TYPES": ",".join(RESOURCES.values()),
               **{f"{name}_QRMI_JOB_ACQUISITION_TOKEN": token for name, token in tokens.items()}}
        for token in tokens.values():
            qrmid.release(token)


def run(job_env: dict[str, str], program: list[str], cwd: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("QRMI_", "SLURM_JOB_QPU"))}
    return subprocess.run(program, env={**env, **job_env, **overrides}, cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def program(job_env: dict[str, str], tmp_path: Path, name: str, *args: str, **overrides: str) -> dict[str, Any]:
    """Run ``qrmi_programs/NAME``; its JSON report (the last line it prints). It must exit 0."""
    completed = run(job_env, [sys.executable, str(PROGRAMS / name), *args], tmp_path, **overrides)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def only(resource: str) -> dict[str, str]:
    """The job environment of a job given ``resource`` alone."""
    return {"QRMI_JOB_QPU_RESOURCES": resource, "QRMI_JOB_QPU_TYPES": RESOURCES[resource]}


def slow_sequence() -> str:
    """Ten atoms under a 4 µs pulse: seconds of exact emulation."""
    register = Register.from_coordinates([(7.0 * (i % 4), 7.0 * (i // 4)) for i in range(10)], prefix="q")
    sequence = Sequence(register.with_automatic_layout(AnalogDevice), AnalogDevice)
    sequence.declare_channel("ryd", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(4000, 3.0, 1.0, 0.0), "ryd")
    return sequence.to_abstract_repr()


def test_resource_lifecycle_on_a_qiskit_resource(job_env: dict[str, str], tmp_path: Path, daemon: str) -> None:
    (tmp_path / "bell.json").write_text(json.dumps(examples.load("bell")))
    report = program(job_env, tmp_path, "resource_lifecycle.py", "local-qiskit", "IBMQuantumSystem", "bell.json")

    assert (report["id"], report["type"]) == ("local-qiskit", "ResourceType.IBMQuantumSystem")
    assert "local-qiskit" in report["repr"] and report["accessible"] and report["online"]
    assert report["status"]["status"] == "online" and report["status"]["capacity"]["max_slots"] == 2
    assert {"configuration", "properties"} <= set(report["target_keys"]) and report["lease"] > 20
    assert report["statuses"][-1] == "TaskStatus.Completed" and len(set(report["statuses"])) == len(report["statuses"])
    assert set(report["statuses"]) <= {"TaskStatus.Queued", "TaskStatus.Running", "TaskStatus.Completed"}
    [pub] = summarize(report["result"].encode())["pubs"]
    assert set(pub["meas"]) <= {"00", "11"} and sum(pub["meas"].values()) == 1024
    assert "qiskit-aer" in report["logs"] and report["after_stop"] == "TaskStatus.Completed"
    with Client(daemon) as qrmid:  # the program released its own lease; the job's two remain
        assert len(qrmid.list_leases()) == 2


def test_resource_lifecycle_on_a_pulser_resource_stops_waiting_and_running_tasks(
        job_env: dict[str, str], tmp_path: Path) -> None:
    pulser_input = examples.load("pulser")
    (tmp_path / "pulser.json").write_text(json.dumps(pulser_input))
    (tmp_path / "slow.json").write_text(json.dumps({"sequence": json.loads(slow_sequence()), "job_runs": 10}))
    report = program(job_env, tmp_path, "resource_lifecycle.py", "local-pulser", "PasqalCloud", "pulser.json",
                     "--stop", "slow.json")

    assert report["type"] == "ResourceType.PasqalCloud" and report["status"]["capacity"]["max_slots"] == 1
    assert report["statuses"][-1] == "TaskStatus.Completed"
    assert sum(json.loads(report["result"])["counter"].values()) == pulser_input["job_runs"]
    assert report["stopped"] == {"waiting": ["TaskStatus.Queued", "TaskStatus.Cancelled"],
                                 "running": ["TaskStatus.Running", "TaskStatus.Cancelled"],
                                 "result_of_stopped": "TaskNotReadyError"}


def test_service_discovery_keeps_the_jobs_accessible_resources(job_env: dict[str, str], tmp_path: Path) -> None:
    report = program(job_env, tmp_path, "service_discovery.py", "local-pulser")
    assert report["job"] == RESOURCES
    assert report["kept"] == {"local-qiskit": "ResourceType.LocalQiskit", "local-pulser": "ResourceType.LocalPulser"}
    assert report["unknown_is_none"] and report["released"]
    assert report["metadata"] and "AnalogDevice" in json.dumps(report["target"])

    listed = program(job_env, tmp_path, "service_discovery.py", QRMI_LIST_DELIMITER=";",
                     QRMI_JOB_QPU_RESOURCES="local-qiskit;gone;custom",
                     QRMI_JOB_QPU_TYPES="local-qiskit;ibm-quantum-system;some-new-type")
    assert listed["job"] == {"local-qiskit": "local-qiskit", "gone": "ibm-quantum-system", "custom": "some-new-type"}
    assert listed["kept"] == {"local-qiskit": "ResourceType.LocalQiskit"} and "metadata" not in listed


def test_qiskit_primitives_sample_and_estimate_right(job_env: dict[str, str], tmp_path: Path) -> None:
    report = program(job_env, tmp_path, "qiskit_primitives.py", **only("local-qiskit"))
    assert report["backend_qubits"] == report["target_qubits"] == 5
    assert report["get_target_warns"] == ["DeprecationWarning"]
    finished = {"status": "DONE", "done": True, "running": False, "final": True, "errored": False, "cancelled": False}
    sampler, estimator = report["sampler"], report["estimator"]
    assert {key: sampler["job"][key] for key in finished} == finished and "qiskit-aer" in sampler["logs"]
    assert sampler["counts"] == [{"000": 500}, {"111": 500}]
    assert {key: estimator["job"][key] for key in finished} == finished  # cancel() left the finished job as it was
    theta = math.pi / 3  # <Z> on the first qubit, ZZ parity, XXX coherence of cos(θ/2)|000> + sin(θ/2)|111>
    assert estimator["evs"] == pytest.approx([math.cos(theta), 1.0, math.sin(theta)], abs=0.1)
    assert estimator["metadata"]["target_precision"] == 0.02


def test_pulser_batches_run_and_report(job_env: dict[str, str], tmp_path: Path) -> None:
    report = program(job_env, tmp_path, "pulser_batches.py", **only("local-pulser"))
    assert report["resource"] == "local-pulser" and report["device"] in report["devices"]
    assert report["open_batches"] is True
    for counts, runs in zip(report["batch"], (300, 100), strict=True):
        assert sum(counts.values()) == runs and counts.get("111", 0) > 0.9 * runs  # every atom inverted
    assert report["direct_status"] == report["after_cancel"] == "DONE"
    assert sum(report["direct"].values()) == 50 and len(report["logs"]) == 1


# What ``qrmi``'s top-level module shows but is not its API: names its __init__ imports for itself.
NOT_API = {"getLogger", "logger"}
# ``qrmi``'s API that the drop-in leaves out (docs/python.md): the daemon owns configuration and discovery.
NOT_PROVIDED = {"Config", "ResourceDef", "ResourceProvider", "set_log_callback"}
EXTRA_RESOURCE_TYPES = {"LocalQiskit": 100, "LocalPulser": 101}  # qrmid's local simulators
# What ``qrmi`` returns and callers never build (its classes have no constructor).
RETURNED_ONLY = {"ResourceCapacity", "ResourceStatus", "Target", "TaskResult"}
QRMI_PASQAL = Path(qrmi.__file__).parent / "primitives" / "pasqal" / "target.py"


def qrmi_module(name: str) -> ModuleType:
    """The ``qrmi`` module the drop-in module ``qrmid.<name>`` stands for. ``qrmi.primitives.pasqal`` imports
    qiskit-pasqal-provider, which the drop-in does not offer, so its ``get_device`` is read from the module that
    defines it; ``qrmi.pulser.service`` is the path of older ``qrmi`` releases for ``qrmi.primitives.service``."""
    if name == "qrmi.primitives.pasqal":
        spec = importlib.util.spec_from_file_location("qrmi_pasqal_target", QRMI_PASQAL)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module("qrmi.primitives.service" if name == "qrmi.pulser.service" else name)


def public(namespace: Any) -> set[str]:
    """A module's or class's public names: its ``__all__`` when it has one, else what ``dir`` shows; no modules."""
    names = getattr(namespace, "__all__", None) or dir(namespace)
    return {name for name in names if not name.startswith("_") and not inspect.ismodule(getattr(namespace, name))}


def way(parameter: inspect.Parameter) -> str:
    kinds = {inspect.Parameter.KEYWORD_ONLY: "keyword", inspect.Parameter.VAR_POSITIONAL: "*args",
             inspect.Parameter.VAR_KEYWORD: "**kwargs"}
    return kinds.get(parameter.kind, "positional")


def assert_same_call(ours: Callable[..., Any], theirs: Callable[..., Any], where: str) -> None:
    """``ours`` takes ``theirs``'s parameters in the same order and way, with its defaults where it declares them
    (annotations aside); it may add optional keyword-only parameters."""
    real = [p for p in inspect.signature(theirs).parameters.values() if p.name != "self"]
    mine = [p for p in inspect.signature(ours).parameters.values() if p.name != "self"]
    assert [(p.name, way(p)) for p in mine[:len(real)]] == [(p.name, way(p)) for p in real], where
    for m, r in zip(mine, real, strict=False):
        assert r.default is r.empty or m.default == r.default, f"{where}: {r.name} defaults to {r.default!r}"
    for extra in mine[len(real):]:
        assert way(extra) == "keyword" and extra.default is not extra.empty, f"{where}: {extra.name} is extra"


def assert_same_class(ours: type, theirs: type, where: str) -> None:
    """Every public method and attribute of ``theirs`` exists in ``ours``, each method (and the constructor, for a
    class callers build) called the same way."""
    mine = public(ours) | set(getattr(ours, "__dataclass_fields__", {}))
    assert public(theirs) <= mine, f"{where} lacks {sorted(public(theirs) - mine)}"
    if where not in RETURNED_ONLY:
        assert_same_call(ours, theirs, where)
    for name in public(theirs):
        if callable(getattr(theirs, name)) and not inspect.isclass(getattr(theirs, name)):
            assert_same_call(getattr(ours, name), getattr(theirs, name), f"{where}.{name}")


def members(enum: Any) -> dict[str, tuple[int, str]]:
    """An enum's members: value and string form."""
    return {name: (int(getattr(enum, name)), str(getattr(enum, name))) for name in public(enum)
            if name[0].isupper()}


def test_dropin_has_the_qrmi_packages_names_signatures_enums_and_errors() -> None:
    """Compared with ``qrmi`` itself: a program written for it finds the same names, calls, members and errors."""
    assert public(qrmid.qrmi) == public(qrmi) - NOT_API - NOT_PROVIDED
    for name in public(qrmi) - NOT_API - NOT_PROVIDED:
        ours, theirs = getattr(qrmid.qrmi, name), getattr(qrmi, name)
        if name.endswith("Error"):
            assert issubclass(ours, qrmid.qrmi.QrmiError) and issubclass(ours, RuntimeError), name
            assert issubclass(theirs, qrmi.QrmiError) and issubclass(theirs, RuntimeError), name
        elif name in ("TaskStatus", "ResourceType", "ResourceStatusCode"):
            extra = EXTRA_RESOURCE_TYPES if name == "ResourceType" else {}
            assert members(ours) == members(theirs) | {key: (value, f"{name}.{key}") for key, value in extra.items()}
        elif name == "Payload":
            assert public(ours) == public(theirs)
            for variant in public(theirs):
                assert_same_call(getattr(ours, variant), getattr(theirs, variant), f"Payload.{variant}")
        elif inspect.isclass(theirs):
            assert_same_class(ours, theirs, name)
        else:
            assert_same_call(ours, theirs, name)

    for module in ("qrmi.primitives", "qrmi.primitives.ibm", "qrmi.primitives.service", "qrmi.pulser"):
        ours_module, theirs_module = importlib.import_module(f"qrmid.{module}"), qrmi_module(module)
        assert public(ours_module) == public(theirs_module), module
        for name in public(theirs_module):
            ours, theirs = getattr(ours_module, name), getattr(theirs_module, name)
            check = assert_same_class if inspect.isclass(theirs) else assert_same_call
            check(ours, theirs, f"{module}.{name}")
    from qrmid.qrmi.primitives.pasqal import get_device
    assert_same_call(get_device, qrmi_module("qrmi.primitives.pasqal").get_device, "qrmi.primitives.pasqal.get_device")


def test_programs_use_only_what_qrmi_offers() -> None:
    """Every name the programs import from the drop-in is one ``qrmi`` offers under the same module."""
    imported = []
    for path in sorted(PROGRAMS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qrmid.qrmi"):
                imported += [(path.name, node.module.removeprefix("qrmid."), alias.name) for alias in node.names]
    assert {module for _, module, _ in imported} >= {"qrmi", "qrmi.primitives", "qrmi.primitives.ibm",
                                                     "qrmi.primitives.pasqal", "qrmi.pulser", "qrmi.pulser.service"}
    for program_name, module, name in imported:
        assert hasattr(qrmi_module(module), name), f"{program_name} imports {name} from {module}, which qrmi lacks"


def test_task_runner(job_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "bell.json").write_text(json.dumps(examples.load("bell")))
    runner = str(Path(sys.executable).parent / "qrmid-task-runner")
    done = run(job_env, [runner, "local-qiskit", "bell.json", "out.json"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Task ID: " in done.stdout
    [pub] = summarize((tmp_path / "out.json").read_bytes())["pubs"]
    assert set(pub["meas"]) <= {"00", "11"} and sum(pub["meas"].values()) == 1024
    printed = run(job_env, [sys.executable, "-m", "qrmid.task_runner", "local-qiskit", "bell.json"], tmp_path)
    assert printed.returncode == 0 and '{"__type__": "PrimitiveResult"' in printed.stdout
    missing = run(job_env, [runner, "nope", "bell.json"], tmp_path)
    assert missing.returncode == 2 and "nope is not available" in missing.stdout
    unleased = run(job_env, [runner, "local-qiskit", "bell.json"], tmp_path,
                   **{"local-qiskit_QRMI_JOB_ACQUISITION_TOKEN": ""})
    assert unleased.returncode == 2 and "needs a lease" in unleased.stdout

def test_dropin_maps_daemon_errors(job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in job_env.items():
        monkeypatch.setenv(key, value)
    resource = QuantumResource("local-qiskit", ResourceType.IBMQuantumSystem)
    with pytest.raises(InvalidInputError, match="INVALID_ARGUMENT: .*OpenQASM"):
        resource.task_start(Payload.QiskitPrimitive(input='{"pubs": [["not qasm"]], "version": 2}',
                                                    program_id="sampler"))
    for payload in (Payload.AliceBobFelis(human_qir="", input_params="{}"),
                    Payload.IQMServer(iqmjson="{}", job_type="circuit"), Payload.Oqtopus(job_spec={})):
        with pytest.raises(UnsupportedPayloadError, match=f"not {type(payload).__name__}"):
            resource.task_start(payload)
    with pytest.raises(TaskNotFoundError, match="NOT_FOUND"):
        resource.task_status("no-such-task")
    assert not QuantumResource("nope", ResourceType.IBMQuantumSystem).is_accessible()
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", "local-qiskit;nope;custom")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "local-qiskit;ibm-quantum-system;some-new-type")
    monkeypatch.setenv("QRMI_LIST_DELIMITER", ";")
    service = QRMIService()  # only accessible resources of known types
    assert [r.resource_id() for r in service.resources()] == ["local-qiskit"] and service.resource("nope") is None
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "local-qiskit")
    with pytest.raises(ValueError, match="Inconsistent"):
        get_job_qpu_resources_and_types()
    with pytest.raises(ConfigError, match="invalid configuration: Inconsistent"):
        QRMIService()
    monkeypatch.delenv("QRMI_JOB_QPU_TYPES")
    with pytest.raises(EnvVarNotSetError, match="QRMI_JOB_QPU_TYPES"):
        QRMIService()
    monkeypatch.setenv("local-qiskit_QRMI_JOB_ACQUISITION_TOKEN", "")
    bell = Payload.QiskitPrimitive(input=json.dumps(examples.load("bell")["parameters"]), program_id="sampler")
    with pytest.raises(InvalidInputError, match="needs a lease"):
        resource.task_start(bell)
    token = resource.acquire()  # a handle's own lease is used for its tasks
    task = resource.task_start(bell)
    assert resource._wait(task).name == "Completed" and "PrimitiveResult" in resource.task_result(task).value
    resource.release(token)
    monkeypatch.delenv("QRMID_ADDRESS")  # vendor keys are not used; a QRMID_ADDRESS key picks the daemon
    configured = QuantumResource.from_config("local-qiskit", ResourceType.IBMQuantumSystem,
                                             {"QRMID_ADDRESS": job_env["QRMID_ADDRESS"], "QRMI_IBM_QS_IAM_APIKEY": "x"})
    assert configured.is_accessible() and configured.target().value == resource.target().value


def test_task_runner_cancels_on_sigterm(job_env: dict[str, str], tmp_path: Path, daemon: str) -> None:
    text = slow_sequence()
    (tmp_path / "slow.json").write_text(json.dumps({"sequence": json.loads(text), "job_runs": 10}))
    token = job_env["local-pulser_QRMI_JOB_ACQUISITION_TOKEN"]
    with Client(daemon) as qrmid:
        ahead = [qrmid.start_task("local-pulser", pulser_payload(text, 10), lease_token=token) for _ in range(4)]
        env = {key: value for key, value in os.environ.items() if not key.startswith("QRMI_")}
        runner = subprocess.Popen([sys.executable, "-m", "qrmid.task_runner", "local-pulser", "slow.json"],
                                  env={**env, **job_env}, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        try:
            assert runner.stdout is not None
            task_id = next(line for line in runner.stdout if "Task ID: " in line).split("Task ID: ")[1].strip()
            assert qrmid.task(task_id).state == pb.TASK_STATE_QUEUED  # behind the four ahead of it
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(timeout=60) == 1
            assert qrmid.task(task_id).state == pb.TASK_STATE_CANCELLED
        finally:
            runner.kill()
            for task in ahead:
                qrmid.stop_task(task.id)


def test_handle_is_shared_between_threads(job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in job_env.items():
        monkeypatch.setenv(key, value)
    resource = QuantumResource("local-qiskit", ResourceType.IBMQuantumSystem)
    payload = Payload.QiskitPrimitive(input=json.dumps(examples.load("bell")["parameters"]), program_id="sampler")

    def bell(_: int) -> TaskStatus:
        return resource._wait(resource.task_start(payload))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(bell, range(8))) == [TaskStatus.Completed] * 8
