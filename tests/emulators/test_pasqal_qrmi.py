"""QRMI's own Pasqal Cloud resource (the ``qrmi`` wheel, Rust client) against the emulator.

It is pointed at the emulator with its documented keys, un-prefixed through ``QuantumResource.from_config``:
``QRMI_PASQAL_CLOUD_BASE_URL`` (QRMI appends ``/core-fast/api/…``) and ``QRMI_PASQAL_CLOUD_AUTH_ENDPOINT``.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import qrmi
from pulser.abstract_repr import deserialize_device
from pulser.backend import QPUBackend
from qrmi.pulser import PulserQRMIConnection

from . import pasqal_fixtures
from .pasqal_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    PASSWORD,
    PROJECT,
    USERNAME,
    Emulator,
    sequence,
)

# The shared fixtures, bound here so that tests can request them by name.
emulator = pasqal_fixtures.emulator
api = pasqal_fixtures.api

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _resource(emulator: Emulator, device_type: str, **credentials: str) -> qrmi.QuantumResource:
    config = {
        "QRMI_PASQAL_CLOUD_PROJECT_ID": PROJECT,
        "QRMI_PASQAL_CLOUD_BASE_URL": emulator.url,
        "QRMI_PASQAL_CLOUD_AUTH_ENDPOINT": f"{emulator.url}/oauth/token",
    }
    credentials = credentials or {
        "QRMI_PASQAL_CLOUD_CLIENT_ID": CLIENT_ID,
        "QRMI_PASQAL_CLOUD_CLIENT_SECRET": CLIENT_SECRET,
    }
    return qrmi.QuantumResource.from_config(device_type, qrmi.ResourceType.PasqalCloud, config | credentials)


def _wait(resource: qrmi.QuantumResource, task_id: str) -> qrmi.TaskStatus:
    deadline = time.monotonic() + 20
    while (status := resource.task_status(task_id)) in (qrmi.TaskStatus.Queued, qrmi.TaskStatus.Running):
        assert time.monotonic() < deadline, "task did not finish"
        time.sleep(0.1)
    return status


def test_qrmi_task_lifecycle(emulator: Emulator, api: httpx.Client) -> None:
    resource = _resource(emulator, "FRESNEL")
    assert resource.is_accessible()
    target = json.loads(resource.target().value)
    assert [entry["device_type"] for entry in target] == ["FRESNEL"]
    device = deserialize_device(target[0]["specs"])
    assert device.name == "FRESNEL"
    payload = qrmi.Payload.PasqalCloud(sequence=sequence(device, parametrized=False).to_abstract_repr(), job_runs=40)
    task_id = resource.task_start(payload)
    assert _wait(resource, task_id) == qrmi.TaskStatus.Completed
    counter = json.loads(resource.task_result(task_id).value)["counter"]
    assert sum(counter.values()) == 40 and {len(bits) for bits in counter} == {2}
    assert resource.task_logs(task_id) == "There are no logs for this job."
    recorded = [b for b in emulator.record()["batches"] if b["id"] == task_id]
    assert recorded[0]["job_count"] == 1 and recorded[0]["device_type"] == "FRESNEL"
    with pytest.raises(qrmi.QrmiError, match="400"):
        resource.task_stop(task_id)  # a finished batch cannot be cancelled


def test_qrmi_stop_cancels_and_availability_is_reported(emulator: Emulator, api: httpx.Client) -> None:
    emulator.settings(batch_overhead_s=30)
    resource = _resource(emulator, "EMU_MPS", PASQAL_USERNAME=USERNAME, PASQAL_PASSWORD=PASSWORD)
    device = deserialize_device(json.loads(resource.target().value)[0]["specs"])
    payload = qrmi.Payload.PasqalCloud(sequence=sequence(device, parametrized=False).to_abstract_repr(), job_runs=5)
    task_id = resource.task_start(payload)
    assert emulator.record()["token_grants"][-1]["subject"] == "alice"  # the password-realm grant
    assert resource.task_status(task_id) == qrmi.TaskStatus.Queued
    resource.task_stop(task_id)
    assert resource.task_status(task_id) == qrmi.TaskStatus.Cancelled
    try:
        emulator.control("POST", "devices/EMU_MPS", {"availability": "RETIRED"})
        assert not resource.is_accessible()
    finally:
        emulator.control("POST", "devices/EMU_MPS", {"availability": "ACTIVE"})
    assert resource.is_accessible()


def test_qrmi_renews_a_token_close_to_expiry(emulator: Emulator, api: httpx.Client) -> None:
    emulator.settings(token_lifetime_s=11.5)  # QRMI renews within 10 s of exp: here after about 1.5 s
    resource = _resource(emulator, "FRESNEL_CAN1")
    before = len(emulator.record()["token_grants"])
    resource.target()
    time.sleep(2.0)
    resource.target()
    assert len(emulator.record()["token_grants"]) == before + 2


def test_pulser_through_qrmi(emulator: Emulator, api: httpx.Client) -> None:
    connection = PulserQRMIConnection(qrmi=_resource(emulator, "FRESNEL"))
    device = connection.fetch_available_devices()["FRESNEL"]
    seq = sequence(device, atoms=2, from_layout=True)
    results = QPUBackend(seq, connection).run(
        [{"runs": 15, "variables": {"omega": 1.0}}, {"runs": 25, "variables": {"omega": 2.0}}], wait=True
    )
    assert [sum(result.final_bitstrings.values()) for result in results.results] == [15, 25]
    assert len(results.batch_id.split("|")) == 2  # pulser-QRMI sends one single-job batch per job
