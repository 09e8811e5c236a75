"""Failure injection shared by the emulators: rules that answer matching requests with an error.

Tests steer an emulator at run time through its control routes:

- ``POST /_emulator/faults`` with ``{"latency_s": 0.2, "rules": [{"status": 503, "count": 5}, ...]}``
  sets the added per-request latency and appends rules;
- ``DELETE /_emulator/faults`` clears all of them.

A rule answers the requests it matches (method, path prefix) with ``status`` for ``count`` requests, for
``seconds`` from now (an outage window), or for a random ``probability`` share of them. The body is the
emulator's own error shape, built by the ``error_body`` callback it passes in.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

CONTROL_PATH = "/_emulator/faults"

ErrorBody = Callable[[int, str], Response]


@dataclass
class FaultRule:
    """Answer matching requests with ``status`` while the rule is live."""

    status: int
    method: str = ""
    path_prefix: str = ""
    count: int | None = None
    until: float | None = None
    probability: float = 1.0
    message: str = "injected fault"

    @classmethod
    def from_json(cls, spec: dict) -> FaultRule:
        seconds = spec.get("seconds")
        return cls(
            status=int(spec["status"]),
            method=str(spec.get("method", "")).upper(),
            path_prefix=str(spec.get("path_prefix", "")),
            count=None if spec.get("count") is None else int(spec["count"]),
            until=None if seconds is None else time.monotonic() + float(seconds),
            probability=float(spec.get("probability", 1.0)),
            message=str(spec.get("message", "injected fault")),
        )

    def live(self, now: float) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.until is None or now < self.until

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method == method) and path.startswith(self.path_prefix)


@dataclass
class Faults:
    """The live fault plan of one emulator process."""

    latency_s: float = 0.0
    rules: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    def configure(self, spec: dict) -> None:
        if "latency_s" in spec:
            self.latency_s = float(spec["latency_s"])
        self.rules.extend(FaultRule.from_json(rule) for rule in spec.get("rules", []))

    def clear(self) -> None:
        self.latency_s = 0.0
        self.rules.clear()

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The rule that answers this request, consuming one of its ``count``; None to serve it normally."""
        now = time.monotonic()
        self.rules = [rule for rule in self.rules if rule.live(now)]
        for rule in self.rules:
            if rule.matches(method, path) and self.rng.random() < rule.probability:
                if rule.count is not None:
                    rule.count -= 1
                return rule
        return None


class FaultMiddleware:
    """ASGI middleware serving the control routes and applying the fault plan to every other request."""

    def __init__(self, app: ASGIApp, faults: Faults, error_body: ErrorBody) -> None:
        self.app = app
        self.faults = faults
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == CONTROL_PATH:
            await self._control(Request(scope, receive))(scope, receive, send)
            return
        if self.faults.latency_s:
            await asyncio.sleep(self.faults.latency_s)
        rule = self.faults.pick(scope["method"], path)
        if rule is not None:
            await self.error_body(rule.status, rule.message)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _control(self, request: Request) -> ASGIApp:
        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            if request.method == "DELETE":
                self.faults.clear()
            elif request.method == "POST":
                self.faults.configure(await request.json())
            body = {
                "latency_s": self.faults.latency_s,
                "rules": [{"status": r.status, "path_prefix": r.path_prefix, "count": r.count} for r in self.faults.rules],
            }
            await JSONResponse(body)(scope, receive, send)

        return respond
