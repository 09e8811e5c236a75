"""An S3 front for tests: forwards every request to a real S3 server (moto), records it, and injects faults.

``python -m qrmid.emulators.s3_front --upstream URL [--host 127.0.0.1] [--port 0]`` prints ``listening on URL``.
Clients use the front's URL as their S3 endpoint; moto never checks signatures, so the changed host is harmless.

- ``GET /_emulator/record``: every forwarded request, ``{"method", "path", "status", "time"}``, in order.
- ``/_emulator/faults``: the shared fault rules (``qrmid.emulators.faults``). Injected answers are S3's own XML
  error bodies, with the code a rule's ``message`` names (``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
  ``AccessDenied``, ...) or the status's usual one (a 403 is ``SignatureDoesNotMatch``); as AWS's do, the two
  about keys echo the request's access key id in ``<AWSAccessKeyId>``, so a test can check that a client never
  passes it on.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from .faults import FaultMiddleware, FaultRule, Faults
from .serving import serve

HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-encoding"})
ERRORS = {  # S3 error codes and messages, by code
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature you provided. Check "
                             "your key and signing method.",
    "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
    "AccessDenied": "Access Denied",
    "NoSuchKey": "The specified key does not exist.",
    "InternalError": "We encountered an internal error. Please try again.",
    "SlowDown": "Please reduce your request rate.",
}
BY_STATUS = {403: "SignatureDoesNotMatch", 404: "NoSuchKey", 500: "InternalError", 503: "SlowDown"}
ECHO_KEY_ID = frozenset({"SignatureDoesNotMatch", "InvalidAccessKeyId"})  # AWS names the request's key id in these


def access_key_id(scope: Scope) -> str:
    """The access key id a SigV4 request names: in ``X-Amz-Credential`` (presigned) or the Authorization header."""
    credential = parse_qs(scope.get("query_string", b"").decode()).get("X-Amz-Credential", [""])[0]
    if not credential:
        authorization = dict(scope.get("headers", [])).get(b"authorization", b"").decode()
        credential = authorization.partition("Credential=")[2]
    return credential.split("/", 1)[0]


def s3_error(status: int, message: str, key_id: str = "") -> Response:
    """S3's XML error body: the code ``message`` names (one of ERRORS), else the status's usual one."""
    code = message if message in ERRORS else BY_STATUS.get(status, "ServiceUnavailable")
    text = ERRORS.get(code, message)
    extra = f"<AWSAccessKeyId>{escape(key_id)}</AWSAccessKeyId>" if code in ECHO_KEY_ID and key_id else ""
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(text)}</Message>'
            f"{extra}<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>")
    return Response(body, status_code=status, media_type="application/xml")


class S3Faults(FaultMiddleware):
    """Injected answers in S3's shape."""

    def answer(self, rule: FaultRule, scope: Scope) -> ASGIApp:
        assert rule.status is not None
        return s3_error(rule.status, rule.message, access_key_id(scope))


def build_app(upstream: str) -> ASGIApp:
    """The front as an ASGI app."""
    seen: list[dict[str, Any]] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=upstream, timeout=60) as http:
            app.state.http = http
            yield

    async def forward(request: Request) -> Response:
        headers = {key: value for key, value in request.headers.items() if key not in HOP_HEADERS}
        answer = await request.app.state.http.request(
            request.method, request.url.path, params=request.url.query, headers=headers, content=await request.body())
        seen.append({"method": request.method, "path": request.url.path, "status": answer.status_code,
                     "time": time.time()})
        kept = {key: value for key, value in answer.headers.items() if key.lower() not in HOP_HEADERS}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    async def record(request: Request) -> Response:
        return JSONResponse({"requests": seen})

    methods = ["GET", "PUT", "POST", "DELETE", "HEAD"]
    app = Starlette(routes=[Route("/_emulator/record", record, methods=["GET"]),
                            Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)
    return S3Faults(app, Faults(), s3_error)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qrmid.emulators.s3_front", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the S3 server's URL, e.g. moto's")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    asyncio.run(serve(build_app(args.upstream), args))


if __name__ == "__main__":
    main()
