"""Per-client limits on every qrmid call: a token-bucket call rate, a cap on open streams, and a length cap on
the request's text fields. A flooding or stream-hoarding client is answered RESOURCE_EXHAUSTED (oversized
fields INVALID_ARGUMENT) while every other client keeps being served. On every service, a request that is
not a valid protobuf message is answered INVALID_ARGUMENT (gRPC's own answer is UNKNOWN plus a logged
traceback per call).

A client is the caller's identity (``qrmid.api.identity.caller``), so the interceptor must come after the
authentication interceptor. Admins (among them every caller of an ``auth = "none"`` socket, who is the
daemon's own user), health checks and reflection are not rate- or stream-limited.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from qrmid.api.identity import caller

LIMITED_PREFIX = "/qrmid."
MAX_IDLE_BUCKETS = 4096  # beyond this many clients, full (idle) buckets are forgotten


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Limits per client; 0 turns a limit off."""

    calls_per_second: float = 100.0
    burst: int = 200
    streams: int = 64
    field_chars: int = 1024


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What arrived in place of a request that does not parse."""

    error: str


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError) as exc:
            return Undecodable(str(exc))

    return deserialize


async def _refuse_undecodable(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message: {request.error}")


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


def oversized_field(request: Message, limit: int) -> str | None:
    """A message naming the first top-level text field of ``request`` longer than ``limit``, or None.
    Payload contents are nested messages, bounded by the payload size limit instead."""
    for field, value in request.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING and isinstance(value, str) and len(value) > limit:
            return f"{field.name} is {len(value)} characters long; the limit is {limit}"
    return None


class LimitsInterceptor(grpc.aio.ServerInterceptor):
    """Applies :class:`ClientLimits` to every qrmid call. One instance may serve several servers."""

    def __init__(self, limits: ClientLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._streams = Counter[str]()

    def open_streams(self, client: str) -> int:
        return self._streams[client]

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        limited = details.method.startswith(LIMITED_PREFIX)
        types = {"request_deserializer": _lenient(handler.request_deserializer),
                 "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await _refuse_undecodable(request, context)
                if limited:
                    await self._admit(request, context)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, **types)
        if handler.unary_stream:
            inner_stream = handler.unary_stream
            if not limited and not inspect.isasyncgenfunction(inner_stream):  # context.write: Health.Watch
                return handler

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await _refuse_undecodable(request, context)
                if not limited:
                    async for response in inner_stream(request, context):
                        yield response
                    return
                async with self._stream(await self._admit(request, context), context):
                    async for response in inner_stream(request, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(streaming, **types)
        inner_requests = handler.stream_unary or handler.stream_stream  # reflection: no qrmid call streams requests

        async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for request in requests:
                await _refuse_undecodable(request, context)
                yield request

        if handler.stream_unary:
            async def gathering(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                return await inner_requests(checked(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(gathering, **types)

        async def duplex(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in inner_requests(checked(requests, context), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(duplex, **types)

    @contextlib.asynccontextmanager
    async def _stream(self, client: str | None, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Count an open stream of ``client``'s for as long as it lasts; aborts the call at the limit."""
        if client is None:
            yield
            return
        if self.limits.streams and self._streams[client] >= self.limits.streams:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"you have {self.limits.streams} streams open, the per-client limit; "
                                "close some (read them to their end or cancel them) first")
        self._streams[client] += 1
        try:
            yield
        finally:
            self._streams[client] -= 1
            if not self._streams[client]:
                del self._streams[client]

    async def _admit(self, request: Message, context: grpc.aio.ServicerContext) -> str | None:
        """The caller's name once the call passes the field and rate limits (aborting it otherwise); None for
        an admin, whom rate and stream limits do not hold back."""
        identity = caller(context)
        limits = self.limits
        if limits.field_chars and (fault := oversized_field(request, limits.field_chars)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, fault)
        if identity.admin:
            return None
        if limits.calls_per_second and not self._bucket(identity.name).take(self.clock()):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"rate limit: {limits.calls_per_second:g} calls/s per client (bursts of "
                                f"{limits.burst}); slow down and retry")
        return identity.name

    def _bucket(self, client: str) -> TokenBucket:
        bucket = self._buckets.get(client)
        if bucket is None:
            now = self.clock()
            if len(self._buckets) >= MAX_IDLE_BUCKETS:
                self._buckets = {name: b for name, b in self._buckets.items() if not b.full(now)}
            bucket = self._buckets[client] = TokenBucket(self.limits.calls_per_second,
                                                         max(self.limits.burst, 1), now)
        return bucket
