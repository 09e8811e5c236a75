"""Failure injection shared by the emulators: rules that answer matching requests with an error.

Tests steer an emulator at run time through its control routes:

- ``POST /_emulator/faults`` with ``{"latency_s": 0.2, "rules": [{"status": 503, "count": 5}, ...]}``
  sets the added per-request latency and appends rules;
- ``DELETE /_emulator/faults`` clears all of them.

A rule answers the requests it matches (method, path prefix) with ``status`` for ``count`` requests, for
``seconds`` from now (an outage window), or for a random ``probability`` share of them. The body is the
emulator's own error shape, built by the ``error_body`` callback it passes in.

Two more keys strike at the moment after a write took effect: with ``"landed": true`` the request is served
first (a job is stored, an object written) and only then does the client get the rule's ``status`` instead of
the real answer (or the real answer, when the rule has no ``status``); ``hold_s`` holds the answer that long
(or until the client hangs up), so that a client can be killed while its write has landed unanswered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTROL_PATH = "/_emulator/faults"

ErrorBody = Callable[[int, str], Response]


@dataclass
class FaultRule:
    """Answer matching requests with ``status`` (None: their real answer) while the rule is live."""

    status: int | None = None
    method: str = ""
    path_prefix: str = ""
    count: int | None = None
    until: float | None = None
    probability: float = 1.0
    message: str = "injected fault"
    landed: bool = False
    hold_s: float = 0.0

    @classmethod
    def from_json(cls, spec: dict) -> FaultRule:
        seconds = spec.get("seconds")
        status = spec.get("status")
        if status is None and not spec.get("landed") and not spec.get("hold_s"):
            raise ValueError("a fault rule needs a 'status', 'landed' or 'hold_s'")
        return cls(
            status=None if status is None else int(status),
            method=str(spec.get("method", "")).upper(),
            path_prefix=str(spec.get("path_prefix", "")),
            count=None if spec.get("count") is None else int(spec["count"]),
            until=None if seconds is None else time.monotonic() + float(seconds),
            probability=float(spec.get("probability", 1.0)),
            message=str(spec.get("message", "injected fault")),
            landed=bool(spec.get("landed", False)),
            hold_s=float(spec.get("hold_s", 0.0)),
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
        if rule is None:
            await self.app(scope, receive, send)
        elif rule.landed:
            answer: list[Message] = []

            async def keep(message: Message) -> None:
                answer.append(message)

            await self.app(scope, receive, keep)  # the request takes effect; its answer is held back
            if await _held(rule.hold_s, receive):
                return
            if rule.status is None:
                for message in answer:
                    await send(message)
            else:
                await self.answer(rule, scope)(scope, receive, send)
        else:
            await asyncio.sleep(rule.hold_s)  # the request is not read yet: hold it as it stands
            if rule.status is None:
                await self.app(scope, receive, send)
            else:
                await self.answer(rule, scope)(scope, receive, send)

    def answer(self, rule: FaultRule, scope: Scope) -> ASGIApp:
        """The injected answer to a request ``rule`` matched: the emulator's error body with the rule's status."""
        assert rule.status is not None
        return self.error_body(rule.status, rule.message)

    def _control(self, request: Request) -> ASGIApp:
        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            if request.method == "DELETE":
                self.faults.clear()
            elif request.method == "POST":
                try:
                    self.faults.configure(await request.json())
                except (ValueError, KeyError, TypeError) as exc:
                    await JSONResponse({"error": f"invalid fault plan: {exc}"}, status_code=400)(scope, receive, send)
                    return
            body = {
                "latency_s": self.faults.latency_s,
                "rules": [{"status": r.status, "path_prefix": r.path_prefix, "count": r.count, "landed": r.landed,
                           "hold_s": r.hold_s} for r in self.faults.rules],
            }
            await JSONResponse(body)(scope, receive, send)

        return respond


async def _held(seconds: float, receive: Receive) -> bool:
    """Hold the answer to a request already read for ``seconds``; True when the client hung up meanwhile."""
    if seconds <= 0:
        return False

    async def hang_up() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        async with asyncio.timeout(seconds):
            await hang_up()
    except TimeoutError:
        return False
    return True
