"""A server interceptor that times every RPC and counts it by method and status code."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Observe = Callable[[str, str, float], None]  # (method, status code name, seconds)


class RpcTelemetry(grpc.aio.ServerInterceptor):
    """Passes each RPC's full method name, final status code and handling time to ``observe``."""

    def __init__(self, observe: Observe) -> None:
        self.observe = observe

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return None
        method = details.method
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(method, handler.unary_unary))
        if handler.unary_stream is not None:
            if not inspect.isasyncgenfunction(handler.unary_stream):  # writes with context.write (Health.Watch)
                return handler._replace(unary_stream=self._unary(method, handler.unary_stream))
            return handler._replace(unary_stream=self._stream(method, handler.unary_stream))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._unary(method, handler.stream_unary))
        return handler._replace(stream_stream=self._stream(method, handler.stream_stream))

    def _unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            failed = True
            try:
                response = await behavior(request, context)
                failed = False
                return response
            finally:
                self.observe(method, _code(context, failed), time.perf_counter() - start)

        return timed

    def _stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def timed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start = time.perf_counter()
            failed = True
            try:
                async for item in behavior(request, context):
                    yield item
                failed = False
            finally:
                self.observe(method, _code(context, failed), time.perf_counter() - start)

        return timed


def _code(context: grpc.aio.ServicerContext, failed: bool) -> str:
    """The status the RPC ends with: the one the handler set, else OK, or UNKNOWN for an unhandled error
    (a cancelled call counts as CANCELLED)."""
    code = context.code()
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code).name
    if context.cancelled():
        return "CANCELLED"
    return "UNKNOWN" if failed else "OK"
