"""The S3 side of the data flow: objects named after the job, moved through SigV4 presigned URLs.

botocore signs (no hand-written SigV4); httpx moves the bytes, so nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import re
from typing import Any

import httpx

from qrmid.backends.retry import Transient, attempts

OBJECTS = ("input", "results", "logs")


def object_key(kind: str, job_id: str) -> str:
    return f"{kind}_{job_id}.json"


class Storage:
    """One bucket, seen from qrmid (``endpoint``) and from the service (``service_endpoint``)."""

    def __init__(self, http: httpx.AsyncClient, *, endpoint: str, service_endpoint: str, bucket: str, region: str,
                 access_key: str, secret_key: str, deadline: float) -> None:
        self.http = http
        self.bucket = bucket
        self.deadline = deadline
        self._args = {"region": region, "access_key": access_key, "secret_key": secret_key}
        self._endpoints = (endpoint, service_endpoint)
        self._ours: Any = None
        self._theirs: Any = None

    async def start(self) -> None:
        """Build the signing clients (botocore loads its models from disk, so in a thread)."""
        self._ours, self._theirs = await asyncio.to_thread(
            lambda: tuple(_signer(endpoint, **self._args) for endpoint in self._endpoints))

    def service_url(self, method: str, key: str, expires: int) -> str:
        """A presigned URL the service uses: GET for the input, PUT for results and logs."""
        return self._sign(self._theirs, method, key, expires)

    async def put(self, key: str, data: bytes) -> None:
        await self._transfer("PUT", key, data, ok=(200,))

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        response = await self._transfer("GET", key, None, ok=(200, 404))
        return response.content if response.status_code == 200 else None

    async def delete(self, key: str) -> None:
        await self._transfer("DELETE", key, None, ok=(200, 204, 404))

    async def _transfer(self, method: str, key: str, data: bytes | None, ok: tuple[int, ...]) -> httpx.Response:
        async for attempt in attempts(f"S3 {method} {key}", self.deadline):
            with attempt:
                url = self._sign(self._ours, method, key, 900)
                response = await self.http.request(method, url, content=data)
                if response.status_code >= 500:
                    raise Transient(f"HTTP {response.status_code}")
        if response.status_code not in ok:
            raise RuntimeError(f"S3 {method} {key} answered HTTP {response.status_code}: {_error(response.text)}")
        return response

    def _sign(self, client: Any, method: str, key: str, expires: int) -> str:
        operation = {"GET": "get_object", "PUT": "put_object", "DELETE": "delete_object"}[method]
        url: str = client.generate_presigned_url(operation, Params={"Bucket": self.bucket, "Key": key},
                                                 ExpiresIn=expires)
        return url


def _error(body: str) -> str:
    """S3's own account of an error (``Code: Message`` from its XML body), never the body as is: AWS's echoes the
    request's access key id and what it signed."""
    code, message = (re.search(rf"<{tag}>([^<]{{0,300}})</{tag}>", body) for tag in ("Code", "Message"))
    if code is None:
        return "no S3 error body" if not body.strip() else "an error body that is not S3's XML"
    return f"{code.group(1)}: {message.group(1) if message else ''}".rstrip(": ")


@functools.cache
def _session() -> Any:
    """One botocore session per process: it loads the S3 model once for every resource."""
    import botocore.session

    return botocore.session.get_session()


def _signer(endpoint: str, *, region: str, access_key: str, secret_key: str) -> Any:
    import botocore.config

    return _session().create_client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}))
