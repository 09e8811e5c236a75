"""Pasqal's own clients, unchanged, against the emulator: the pasqal-cloud SDK and Pulser's cloud connections.

The SDK is pointed at the emulator through its constructor only: ``Endpoints(core=…, account=…)`` and a
``TokenProviderConf`` whose ``token_endpoint`` is the emulator's ``/oauth/token`` (or a custom TokenProvider).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import httpx
import pytest
import requests
from pasqal_cloud import PasqalCloudConnection
from pasqal_cloud.authentication import ExpiringTokenProvider
from pasqal_cloud.endpoints import AUTH0_TOKEN_PROVIDER_GRANT_TYPE, Endpoints, TokenProviderConf
from pasqal_cloud.errors import BatchFetchingError
from pasqal_cloud.pasqal_cloud_client import PasqalCloudClient
from pasqal_cloud.utils.constants import JobStatus
from pasqal_cloud.utils.filters import BatchFilters, CancelJobFilters, JobFilters, RebatchFilters
from pulser.abstract_repr import deserialize_device
from pulser.backend import QPUBackend
from pulser.devices import Device, VirtualDevice

with warnings.catch_warnings():  # the legacy pulser-pasqal imports names pasqal-cloud has deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    from pulser_pasqal import PasqalCloud

from . import pasqal_fixtures
from .pasqal_fixtures import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    PASSWORD,
    PROJECT,
    PUBLIC_CLIENT_ID,
    USERNAME,
    Emulator,
    sequence,
    wait_batch,
)

# The shared fixtures, bound here so that tests can request them by name.
emulator = pasqal_fixtures.emulator
api = pasqal_fixtures.api

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _targets(url: str) -> dict[str, Any]:
    """Constructor arguments that point Pasqal's clients at the emulator."""
    return {
        "endpoints": Endpoints(core=f"{url}/core-fast", account=f"{url}/account"),
        "auth_config": TokenProviderConf(
            token_endpoint=f"{url}/oauth/token",
            public_client_id=PUBLIC_CLIENT_ID,
            audience=AUDIENCE,
            realm="pcs-users",
            grant_type=AUTH0_TOKEN_PROVIDER_GRANT_TYPE,
        ),
    }


@pytest.fixture
def sdk(emulator: Emulator, api: httpx.Client) -> PasqalCloudClient:
    """The SDK logged in with a username and password; ``api`` cleans up unfinished batches after the test."""
    return PasqalCloudClient(username=USERNAME, password=PASSWORD, project_id=PROJECT, **_targets(emulator.url))


def _device(sdk: PasqalCloudClient, device_type: str) -> Device | VirtualDevice:
    return deserialize_device(sdk.get_device_specs_dict()[device_type])


def test_sdk_closed_batch_waits_and_fetches_results(emulator: Emulator, sdk: PasqalCloudClient) -> None:
    seq = sequence(_device(sdk, "FRESNEL")).to_abstract_repr()
    jobs = [{"runs": 30, "variables": {"omega": 1.0}}, {"runs": 20, "variables": {"omega": 4.0}}]
    batch = sdk.create_batch(seq, jobs=jobs, device_type="FRESNEL", wait=True)
    assert batch.status == "DONE" and batch.device_type == "FRESNEL"
    assert [job.status for job in batch.ordered_jobs] == ["DONE", "DONE"]
    for job, runs in zip(batch.ordered_jobs, (30, 20), strict=True):
        assert sum(job.result.values()) == runs and {len(bits) for bits in job.result} == {2}
        assert len(job.full_result["raw"]) == runs
    fetched = sdk.get_batch(batch.id)
    assert fetched.sequence_builder == seq and fetched.jobs_count_per_status["DONE"] == 2
    assert sdk.get_batch_status(batch.id).value == "DONE"
    listed = sdk.get_jobs(filters=JobFilters(batch_id=batch.id))
    assert listed.total == 2 and {job.id for job in listed.results} == {job.id for job in batch.ordered_jobs}


def test_sdk_open_batch_add_jobs_close(emulator: Emulator, sdk: PasqalCloudClient) -> None:
    seq = sequence(_device(sdk, "FRESNEL_CAN1")).to_abstract_repr()
    batch = sdk.create_batch(
        seq, jobs=[{"runs": 10, "variables": {"omega": 1.0}}], device_type="FRESNEL_CAN1", open=True
    )
    assert batch.open is True
    batch.add_jobs([{"runs": 10, "variables": {"omega": 2.0}}])
    sdk.add_jobs(batch.id, [{"runs": 10, "variables": {"omega": 3.0}}])
    batch.close(wait=True)
    assert batch.open is False
    final = sdk.get_batch(batch.id)
    assert final.status == "DONE" and [sum(job.result.values()) for job in final.ordered_jobs] == [10, 10, 10]
    recorded = [b for b in emulator.record()["batches"] if b["id"] == batch.id]
    assert recorded == [recorded[0]] and recorded[0]["job_count"] == 3


def test_sdk_cancellations(emulator: Emulator, sdk: PasqalCloudClient) -> None:
    emulator.settings(batch_overhead_s=30)
    seq = sequence(_device(sdk, "EMU_FREE")).to_abstract_repr()
    jobs = [{"runs": r, "variables": {"omega": 1.0}} for r in (5, 6, 7)]
    first = sdk.create_batch(seq, jobs=jobs, device_type="EMU_FREE")
    assert sdk.cancel_job(first.ordered_jobs[0].id).status == "CANCELED"
    by_filter = sdk.cancel_jobs(first.id, CancelJobFilters(min_runs=7))
    assert [job.runs for job in by_filter.jobs] == [7] and by_filter.errors == {}
    assert sdk.cancel_batch(first.id).status == "CANCELED"
    second = sdk.create_batch(seq, jobs=jobs[:1], device_type="EMU_FREE")
    bulk = sdk.cancel_batches([second.id, first.id])
    assert [b.id for b in bulk.batches] == [second.id] and [str(key) for key in bulk.errors] == [first.id]


def test_sdk_rebatch_of_failed_jobs_and_tags(emulator: Emulator, sdk: PasqalCloudClient, api: httpx.Client) -> None:
    emulator.control("POST", "devices/EMU_FRESNEL", {"error_jobs": 1})
    seq = sequence(_device(sdk, "EMU_FRESNEL")).to_abstract_repr()
    jobs = [{"runs": 8, "variables": {"omega": 1.0}}, {"runs": 9, "variables": {"omega": 2.0}}]
    failed = sdk.create_batch(seq, jobs=jobs, device_type="EMU_FRESNEL", tags=["first"])
    wait_batch(api, failed.id)
    assert [job.status for job in sdk.get_batch(failed.id).ordered_jobs] == ["ERROR", "DONE"]
    retried = sdk.rebatch(failed.id, RebatchFilters(status=JobStatus.ERROR))
    assert retried.parent_id == failed.id and retried.tags == ["first"]
    assert [(job.runs, job.parent_id) for job in retried.ordered_jobs] == [(8, failed.ordered_jobs[0].id)]
    tagged = sdk.set_batch_tags(retried.id, ["retry", "emulated"])
    assert tagged.tags == ["retry", "emulated"]
    assert [b.id for b in sdk.get_batches(BatchFilters(tag="retry")).results] == [retried.id]
    wait_batch(api, retried.id)
    assert sum(sdk.get_batch(retried.id).ordered_jobs[0].result.values()) == 8


def test_sdk_refreshes_its_token_and_rides_out_retryable_errors(emulator: Emulator, sdk: PasqalCloudClient) -> None:
    seq = sequence(_device(sdk, "EMU_SV")).to_abstract_repr()
    emulator.settings(token_lifetime_s=61)  # the SDK renews 60 s before expiry: here after about 1 s
    client = PasqalCloudClient(username=USERNAME, password=PASSWORD, project_id=PROJECT, **_targets(emulator.url))
    grants = len(emulator.record()["token_grants"])
    batch = client.create_batch(seq, jobs=[{"runs": 3, "variables": {"omega": 1.0}}], device_type="EMU_SV")
    time.sleep(1.2)
    rules = [{"status": status, "count": 1, "path_prefix": "/core-fast/api/v2/batches"} for status in (502, 429)]
    emulator.control("POST", "faults", {"rules": rules})
    try:
        assert client.get_batch(batch.id).id == batch.id  # after a 502 and a 429 (Retry-After: 1)
    finally:
        emulator.control("DELETE", "faults")
    assert len(emulator.record()["token_grants"]) > grants
    emulator.control("POST", "faults", {"rules": [{"status": 503, "count": 1, "path_prefix": "/core-fast"}]})
    with pytest.raises(BatchFetchingError, match="503"):
        client.get_batch(batch.id)  # 503 is not in the SDK's retry list


class ServiceAccountTokens(ExpiringTokenProvider):
    """A custom TokenProvider using the client_credentials grant against the emulator."""

    def __init__(self, token_endpoint: str) -> None:
        self.token_endpoint = token_endpoint

    def _query_token(self) -> dict[str, Any]:
        form = {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "audience": AUDIENCE,
        }
        response = requests.post(self.token_endpoint, data=form, timeout=10)
        response.raise_for_status()
        return response.json()


def test_sdk_with_a_custom_token_provider(emulator: Emulator, api: httpx.Client) -> None:
    tokens = ServiceAccountTokens(f"{emulator.url}/oauth/token")
    client = PasqalCloudClient(token_provider=tokens, project_id=PROJECT, endpoints=_targets(emulator.url)["endpoints"])
    assert [project.id for project in client.get_all_projects()] == [PROJECT]
    seq = sequence(_device(client, "EMU_MPS")).to_abstract_repr()
    batch = client.create_batch(seq, jobs=[{"runs": 4, "variables": {"omega": 1.0}}], device_type="EMU_MPS")
    assert batch.user_id == "qrmid"


def test_pulser_pasqal_cloud_with_a_qpu_backend(emulator: Emulator, api: httpx.Client) -> None:
    connection = PasqalCloud(username=USERNAME, password=PASSWORD, project_id=PROJECT, **_targets(emulator.url))
    device = connection.fetch_available_devices()["FRESNEL"]
    seq = sequence(device, atoms=2, parametrized=False, from_layout=True)
    results = QPUBackend(seq, connection).run([{"runs": 50}], wait=True)
    assert results.get_batch_status().name == "DONE"
    counts = results.results[0].final_bitstrings
    assert sum(counts.values()) == 50 and {len(bits) for bits in counts} == {2}


def test_pasqal_cloud_connection_packs_an_open_batch(emulator: Emulator, api: httpx.Client) -> None:
    connection = PasqalCloudConnection(
        username=USERNAME, password=PASSWORD, project_id=PROJECT, **_targets(emulator.url)
    )
    device = connection.fetch_available_devices()["FRESNEL8"]
    backend = QPUBackend(sequence(device, atoms=2, from_layout=True), connection)
    with backend.open_batch():
        first = backend.run([{"runs": 20, "variables": {"omega": 1.0}}])
        second = backend.run([{"runs": 30, "variables": {"omega": 2.0}}, {"runs": 10, "variables": {"omega": 3.0}}])
    assert first.batch_id == second.batch_id
    deadline = time.monotonic() + 20
    while second.get_batch_status().name != "DONE" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [sum(r.final_bitstrings.values()) for r in second.results] == [30, 10]
    assert [sum(r.final_bitstrings.values()) for r in first.results] == [20]
    recorded = [b for b in emulator.record()["batches"] if b["id"] == first.batch_id]
    assert recorded[0]["job_count"] == 3 and recorded[0]["open"] is False
