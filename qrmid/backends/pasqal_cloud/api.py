"""The Pasqal Cloud core API over httpx: bearer tokens, the JSend envelope, gzip bodies, bounded retries that never
duplicate a write, and pagination."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from qrmid import __version__
from qrmid.backends.pasqal_cloud.auth import RETRYABLE, Tokens
from qrmid.backends.retry import Transient, attempts

PAGE = 100  # the API's largest page
HEADERS = {"Accept": "application/json", "User-Agent": f"qrmid/{__version__}"}


@dataclass
class ApiError(Exception):
    """A refusal by the service: HTTP status and the envelope's description."""

    status: int
    description: str

    def __str__(self) -> str:
        return f"Pasqal Cloud answered HTTP {self.status}: {self.description}"

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """From the JSend error envelope (``data.description``, then ``message``), or a gateway's text."""
        try:
            body = response.json()
        except ValueError:
            return cls(response.status_code, response.text.strip()[:300] or response.reason_phrase)
        if isinstance(body, dict):
            data = body.get("data")
            if isinstance(data, dict) and data.get("description"):
                return cls(response.status_code, str(data["description"]))
            if body.get("message"):
                return cls(response.status_code, str(body["message"]))
        return cls(response.status_code, str(body)[:300])


class PasqalApi:
    """Calls to the core API (``<base>/core-fast``). Transient failures (408, 425, 429, 5xx, transport errors)
    are retried until ``deadline``; a 401 renews the token and replays the call once; any other refusal raises
    ApiError."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, tokens: Tokens, deadline: float) -> None:
        self.http = http
        self.root = base_url.rstrip("/") + "/core-fast"
        self.tokens = tokens
        self.deadline = deadline

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                   compress: bool = False, auth: bool = True,
                   landed: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """The ``data`` of the response. For a write that must not happen twice, ``landed`` is asked before each
        retry whether an earlier attempt took effect after all, and returns that attempt's ``data`` if so."""
        return (await self._send(method, path, params, body, compress, auth, landed)).get("data")

    async def listing(self, path: str, params: dict[str, Any]) -> list[Any]:
        """Every item of a paginated list, following ``pagination`` from page to page."""
        items: list[Any] = []
        while True:
            envelope = await self._send("GET", path, {**params, "limit": PAGE, "offset": len(items)})
            page = envelope.get("data") or []
            items.extend(page)
            total = (envelope.get("pagination") or {}).get("total", 0)
            if not page or len(items) >= int(total):
                return items

    async def _send(self, method: str, path: str, params: dict[str, Any] | None, body: Any = None,
                    compress: bool = False, auth: bool = True,
                    landed: Callable[[], Awaitable[Any]] | None = None) -> dict[str, Any]:
        content, headers = None, dict(HEADERS)
        if body is not None:
            content = await asyncio.to_thread(_encode, body, compress)
            headers["Content-Type"] = "application/json"
            if compress:
                headers["Content-Encoding"] = "gzip"
        sent = False
        async for attempt in attempts(f"{method} {path}", self.deadline):
            with attempt:
                earlier = await landed() if sent and landed is not None else None
                if earlier is not None:
                    envelope = {"data": earlier}
                else:
                    sent = True
                    envelope = await self._once(method, path, params, content, headers, auth)
        return envelope

    async def once(self, path: str, params: dict[str, Any] | None = None, auth: bool = True) -> Any:
        """One GET without retries: for ``landed`` checks, which run inside a retried call, and status checks,
        which are repeated on their own interval."""
        return (await self._once("GET", path, params, None, dict(HEADERS), auth)).get("data")

    async def download(self, url: str) -> Any:
        """A plain JSON document, such as a results link; no bearer token goes to that host."""
        async for attempt in attempts(f"GET {url.split('?')[0]}", self.deadline):
            with attempt:
                response = await self.http.get(url, headers=HEADERS)
                if response.status_code in RETRYABLE:
                    raise Transient(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise ApiError.of(response)
        return response.json()

    async def _once(self, method: str, path: str, params: dict[str, Any] | None, content: bytes | None,
                    headers: dict[str, str], auth: bool) -> dict[str, Any]:
        for replay in (False, True):
            token = await self.tokens.token() if auth else ""
            bearer = {"Authorization": f"Bearer {token}"} if auth else {}
            response = await self.http.request(method, self.root + path, params=params, content=content,
                                               headers=headers | bearer)
            if response.status_code != 401 or not auth or replay:
                break
            self.tokens.expire(token)
        if response.status_code in RETRYABLE:
            raise Transient(str(ApiError.of(response)))
        if response.status_code != 200:
            raise ApiError.of(response)
        try:
            envelope = response.json()
        except ValueError:
            raise ApiError(response.status_code, f"not JSON: {response.text.strip()[:200]}") from None
        if not isinstance(envelope, dict) or envelope.get("status") != "success":
            raise ApiError.of(response)
        return envelope


def _encode(body: Any, compress: bool) -> bytes:
    raw = json.dumps(body).encode()
    return gzip.compress(raw, compresslevel=6) if compress else raw
