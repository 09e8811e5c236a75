"""A client of the IBM Quantum System API as the spec describes one: httpx for the API, boto3 for S3."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx

API_KEY = "test-api-key"
SERVICE_CRN = "crn:v1:local:emulator"
BUCKET = "qrmid-test"
REGION = "us-east-1"
IAM_GRANT = "urn:ibm:params:oauth:grant-type:apikey"


class SystemApi:
    """A client of the API as the spec describes one, on top of httpx and boto3."""

    def __init__(self, url: str, s3: Any, http: httpx.AsyncClient) -> None:
        self.url = url
        self.s3 = s3
        self.http = http
        self.headers: dict[str, str] = {}

    async def token(self, apikey: str = API_KEY) -> httpx.Response:
        return await self.http.post(
            f"{self.url}/identity/token",
            data={"grant_type": IAM_GRANT, "apikey": apikey},
            headers={"Accept": "application/json"},
        )

    async def login(self) -> None:
        response = await self.token()
        response.raise_for_status()
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}", "Service-CRN": SERVICE_CRN}

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One API request with the bearer token and Service-CRN (plus ``headers``)."""
        return await self.http.request(
            method, f"{self.url}{path}", headers={**self.headers, **(headers or {})}, **kwargs
        )

    def presign(self, method: str, key: str, expires: int = 3600) -> str:
        operation = "get_object" if method == "GET" else "put_object"
        return self.s3.generate_presigned_url(operation, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires)

    def job_request(
        self, job_id: str, backend: str, program_id: str, timeout_secs: int = 300, log_level: str = "info"
    ) -> dict[str, Any]:
        return {
            "id": job_id,
            "backend": backend,
            "program_id": program_id,
            "log_level": log_level,
            "timeout_secs": timeout_secs,
            "storage": {
                "input": {"type": "s3_compatible", "presigned_url": self.presign("GET", f"input_{job_id}.json")},
                "results": {"type": "s3_compatible", "presigned_url": self.presign("PUT", f"results_{job_id}.json")},
                "logs": {"type": "s3_compatible", "presigned_url": self.presign("PUT", f"logs_{job_id}.json")},
            },
        }

    async def submit(
        self,
        backend: str,
        program_id: str,
        document: dict[str, Any] | str,
        *,
        job_id: str | None = None,
        **request: Any,
    ) -> tuple[str, httpx.Response]:
        """Store the input in S3, then ``POST /v1/jobs``; returns the job id and the answer."""
        job_id = job_id or str(uuid.uuid4())
        body = document if isinstance(document, str) else json.dumps(document)
        await asyncio.to_thread(self.s3.put_object, Bucket=BUCKET, Key=f"input_{job_id}.json", Body=body.encode())
        response = await self.call("POST", "/v1/jobs", json=self.job_request(job_id, backend, program_id, **request))
        return job_id, response

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.call("GET", f"/v1/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    async def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll until the job leaves ``Running``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = await self.job(job_id)
            if job["status"] != "Running":
                return job
            await asyncio.sleep(0.1)
        raise AssertionError(f"job {job_id} still Running after {timeout} s")

    async def read(self, key: str) -> str:
        """Read an object through a presigned GET URL, as QRMI does."""
        response = await self.http.get(self.presign("GET", key))
        response.raise_for_status()
        return response.text

    async def delete(self, job_id: str) -> httpx.Response:
        return await self.call("DELETE", f"/v1/jobs/{job_id}")

    async def control(self, backend: str, **update: Any) -> dict[str, Any]:
        response = await self.http.post(f"{self.url}/_emulator/backends/{backend}", json=update)
        response.raise_for_status()
        return response.json()

    async def record(self) -> dict[str, Any]:
        response = await self.http.get(f"{self.url}/_emulator/record")
        response.raise_for_status()
        return response.json()
