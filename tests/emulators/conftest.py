"""Fixtures: a moto S3 server and an IBM Quantum System API emulator as real processes, and a small client that
drives them the way a real client does (S3 PutObject, SigV4 presigned URLs, IAM token, ``/v1`` calls)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from qrmid.emulators.launch import Proc, start_emulator, start_moto

from .ibm_client import API_KEY, BUCKET, REGION, SERVICE_CRN, SystemApi

# One process serves every test; each test that changes a backend at run time uses its own backend.
EMULATOR_CONFIG = f"""
api_keys = ["{API_KEY}"]
service_crn = "{SERVICE_CRN}"
strict_service_crn = true
token_expires_in = 3600

[[backends]]
name = "fake_perth"
device = "perth"
seed = 1234

[[backends]]
name = "lanes_two"
lanes = {{ hpc_workload_manager = 2, ibm_quantum_compute = 3 }}

[[backends]]
name = "reserved"

[[backends]]
name = "slow"
job_duration_s = 30

[[backends]]
name = "paused"
status = "paused"

[[backends]]
name = "faulty"

[[backends]]
name = "qrmi_target"
seed = 99

[[backends]]
name = "lenient"
seed = 5
pub_widths = "lenient"
"""


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Proc]:
    proc = start_moto()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def ibm_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    config = tmp_path_factory.mktemp("ibm_qs") / "emulator.toml"
    config.write_text(EMULATOR_CONFIG)
    proc = start_emulator(config)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def s3(moto_server: Proc) -> Any:
    """boto3 S3 client (path-style, SigV4) with the test bucket created."""
    client = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
async def ibm_api(ibm_emulator: Proc, s3: Any) -> AsyncIterator[SystemApi]:
    """A logged-in client."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        client = SystemApi(ibm_emulator.url, s3, http)
        await client.login()
        yield client


@pytest.fixture(scope="session")
def perth_backend() -> Any:
    from qiskit_ibm_runtime.fake_provider import FakePerth

    return FakePerth()
