"""Faithfulness check with an independent client: QRMI's own Rust client (PyPI ``qrmi``) against the emulator
and a real S3 (moto), unchanged, over plain HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import qrmi
from qiskit import QuantumCircuit, qasm3, transpile
from qrmi.primitives.ibm import SamplerV2, get_backend

from qrmid.emulators.launch import Proc

from .ibm_client import API_KEY, BUCKET, REGION, SERVICE_CRN

BACKEND = "qrmi_target"


@pytest.fixture
def resource(ibm_emulator: Proc, moto_server: Proc, s3: Any) -> qrmi.QuantumResource:
    """A QRMI ``ibm-quantum-system`` resource configured with the keys QRMI reads from its environment."""
    config = {
        "QRMI_IBM_QS_ENDPOINT": ibm_emulator.url,
        "QRMI_IBM_QS_IAM_ENDPOINT": ibm_emulator.url,
        "QRMI_IBM_QS_IAM_APIKEY": API_KEY,
        "QRMI_IBM_QS_SERVICE_CRN": SERVICE_CRN,
        "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "testing",
        "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": "testing",
        "QRMI_IBM_QS_S3_ENDPOINT": moto_server.url,
        "QRMI_IBM_QS_S3_BUCKET": BUCKET,
        "QRMI_IBM_QS_S3_REGION": REGION,
        "QRMI_JOB_TIMEOUT_SECONDS": "600",
    }
    return qrmi.QuantumResource.from_config(BACKEND, qrmi.ResourceType.IBMQuantumSystem, config)


def backend_record(ibm_emulator: Proc) -> dict[str, Any]:
    return httpx.get(f"{ibm_emulator.url}/_emulator/record").json()["backends"][BACKEND]


def test_qrmi_runs_a_sampler_task_unchanged(resource: qrmi.QuantumResource, ibm_emulator: Proc) -> None:
    status = resource.status().to_dict()
    assert status["status"] == "online" and status["capacity"] == {"available_slots": 5, "max_slots": 5}
    target = json.loads(resource.target().value)
    assert target["configuration"]["backend_name"] == BACKEND and target["properties"]["backend_name"] == BACKEND

    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    isa = transpile(bell, get_backend(resource), optimization_level=1, seed_transpiler=7)
    job = SamplerV2(resource).run([isa], shots=200)
    counts = job.result()[0].data.meas.get_counts()
    assert sum(counts.values()) == 200 and counts.get("00", 0) + counts.get("11", 0) > 160, counts
    assert "completed" in job.logs()
    del job  # QRMI's job object stops (DELETEs) the task when it goes away
    record = backend_record(ibm_emulator)
    assert record["stored"] == 0 and record["deletes"] == 1 and len(record["submissions"]) == 1


def test_qrmi_sees_a_non_isa_task_fail(resource: qrmi.QuantumResource) -> None:
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    document = {
        "pubs": [[qasm3.dumps(bell), None, 16]],
        "shots": 16,
        "options": {},
        "version": 2,
        "support_qiskit": True,
    }
    task_id = resource.task_start(qrmi.Payload.QiskitPrimitive(input=json.dumps(document), program_id="sampler"))
    deadline = time.monotonic() + 30
    while (status := resource.task_status(task_id)) == qrmi.TaskStatus.Running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == qrmi.TaskStatus.Failed
    with pytest.raises(qrmi.TaskNotReadyError, match="code: 5203, message: Pub 0: unknown instruction: h"):
        resource.task_result(task_id)
    resource.task_stop(task_id)
    with pytest.raises(qrmi.QrmiError):
        resource.task_status(task_id)
