"""The IBM Quantum System API emulator with a real S3 (moto, optionally behind a recording, fault-injecting front)
for tests, and calls to the emulator's control API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx

from qrmid.emulators.launch import Proc, start_emulator, start_moto

Services = tuple[Proc, Proc]  # (the emulator, moto)


@contextmanager
def ibm_services(config: Path, bucket: str, s3_secret: str = "s", front: bool = False) -> Iterator[Services]:
    """The emulator serving ``config`` and a moto S3 holding ``bucket``; with ``front``, the S3 yielded is
    ``qrmid.emulators.s3_front`` before moto (requests recorded, S3 faults injectable). All stopped at the end."""
    s3, emulator = start_moto(), start_emulator(config)
    fronted = None
    try:
        boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key=s3_secret).create_bucket(Bucket=bucket)
        if front:
            fronted = start_emulator(None, "--upstream", s3.url, module="qrmid.emulators.s3_front")
        yield emulator, fronted or s3
    finally:
        if fronted is not None:
            fronted.stop()
        emulator.stop()
        s3.stop()


async def emulator(services: Services, method: str, path: str, body: Any = None) -> Any:
    """A call to the emulator's own API (faults, records); its JSON answer."""
    async with httpx.AsyncClient(base_url=services[0].url) as http:
        response = await http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()


async def record(services: Services, backend: str) -> dict[str, Any]:
    """What the emulator recorded of ``backend``: submissions, deletes, jobs stored."""
    return (await emulator(services, "GET", "/_emulator/record"))["backends"][backend]


async def s3_requests(services: Services) -> list[dict[str, Any]]:
    """What the S3 front forwarded: ``{"method", "path", "status", "time"}`` per request."""
    async with httpx.AsyncClient(base_url=services[1].url) as http:
        response = await http.get("/_emulator/record")
        response.raise_for_status()
        return list(response.json()["requests"])
