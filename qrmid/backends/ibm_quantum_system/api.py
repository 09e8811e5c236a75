"""The IBM Quantum System API over httpx: IAM bearer tokens, Service-CRN, bounded retries, error bodies."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from qrmid.backends.base import CredentialsRefused
from qrmid.backends.redact import Redactor
from qrmid.backends.retry import Transient, attempts

RETRYABLE = frozenset({408, 500, 502, 503, 504})


@dataclass
class ApiError(Exception):
    """A refusal by the service: HTTP status, IBM error code (a string, may be empty) and message."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        code = f"/{self.code}" if self.code else ""
        return f"HTTP {self.status}{code}: {self.message}"

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """Parse IBM's error body (or IAM's, or a gateway's plain text)."""
        try:
            body = response.json()
        except ValueError:
            return cls(response.status_code, "", response.text.strip()[:300] or response.reason_phrase)
        if isinstance(body, dict) and body.get("errors"):
            first = body["errors"][0]
            return cls(response.status_code, str(first.get("code", "")), str(first.get("message", "")))
        if isinstance(body, dict) and "errorMessage" in body:
            return cls(response.status_code, str(body.get("errorCode", "")), str(body["errorMessage"]))
        return cls(response.status_code, "", str(body)[:300])


class Iam:
    """An IAM bearer token for one API key: fetched once, refreshed at 90 % of its life; only refreshes
    are serialised, calls use the cached token concurrently."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str, api_key: str, deadline: float,
                 redact: Redactor | None = None) -> None:
        self.http = http
        self.url = endpoint.rstrip("/") + "/identity/token"
        self.api_key = api_key
        self.deadline = deadline
        self.redact = redact or Redactor()  # learns each token
        self._token = ""
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if time.monotonic() < self._refresh_at:
            return self._token
        async with self._lock:
            if time.monotonic() >= self._refresh_at:
                await self._fetch()
        return self._token

    def expire(self, token: str) -> None:
        """Drop ``token`` after the service refused it, so the next call fetches a new one."""
        if token == self._token:
            self._refresh_at = 0.0

    async def _fetch(self) -> None:
        form = {"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": self.api_key}
        async for attempt in attempts("IAM token request", self.deadline):
            with attempt:
                response = await self.http.post(self.url, data=form, headers={"Accept": "application/json"})
                if response.status_code in RETRYABLE:
                    raise Transient(str(ApiError.of(response)))
        if response.status_code in (400, 401, 403):
            raise CredentialsRefused(f"IAM at {self.url} refused the configured API key (QRMI_IBM_QS_IAM_APIKEY): "
                                     f"{ApiError.of(response)}")
        if response.status_code != 200:
            raise ApiError.of(response)
        body = response.json()
        self._token = body["access_token"]
        self.redact.learn(self._token)
        self._refresh_at = time.monotonic() + 0.9 * float(body.get("expires_in", 3600))


class QuantumSystemApi:
    """Calls to one service instance. Transient failures are retried until ``deadline``; a 401 fetches a
    new token and replays the call once; any other refusal raises ApiError. ``lacks`` holds the routes the
    service was found not to have (older servers), so that they are never asked for again; ``has`` the ones it
    was found to have."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str, iam: Iam, service_crn: str, deadline: float) -> None:
        self.http = http
        self.endpoint = endpoint.rstrip("/")
        self.iam = iam
        self.service_crn = service_crn
        self.deadline = deadline
        self.lacks: set[str] = set()
        self.has: set[str] = set()

    async def call(self, method: str, path: str, *, json: Any = None, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        async for attempt in attempts(f"{method} {path}", self.deadline):
            with attempt:
                response = await self._authorised(method, path, json)
                if response.status_code in RETRYABLE:
                    raise Transient(str(ApiError.of(response)))
        if response.status_code not in ok:
            raise ApiError.of(response)
        return response

    async def _authorised(self, method: str, path: str, json: Any) -> httpx.Response:
        for replay in (False, True):
            token = await self.iam.token()
            headers = {"Authorization": f"Bearer {token}", "Service-CRN": self.service_crn,
                       "Accept": "application/json"}
            response = await self.http.request(method, self.endpoint + path, json=json, headers=headers)
            if response.status_code != 401 or replay:
                return response
            self.iam.expire(token)
        raise AssertionError("unreachable")

    async def get(self, path: str) -> Any:
        return (await self.call("GET", path)).json()
