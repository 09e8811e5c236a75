"""Domain errors to gRPC status codes, applied around every RPC handler."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from qrmid.core import errors

log = logging.getLogger(__name__)

CODES: dict[type[errors.QrmidError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

Request = TypeVar("Request")
Response = TypeVar("Response")


def code_of(exc: errors.QrmidError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


def unary(handler: Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]
          ) -> Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]:
    """Answer a domain error with its status code and message."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except errors.QrmidError as exc:
            code, message = code_of(exc), str(exc)
        # aborted outside the except block: chained to the domain error, abort's exception would keep the
        # refused request (a payload of megabytes) alive until the cycle collector happens to run
        await context.abort(code, message)
        raise AssertionError("abort() ends the RPC by raising")

    return wrapped


def streaming(handler: Callable[[Any, Request, grpc.aio.ServicerContext], AsyncIterator[Response]]
              ) -> Callable[[Any, Request, grpc.aio.ServicerContext], AsyncIterator[Response]]:
    """The same for a server-streaming handler."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Request, context: grpc.aio.ServicerContext) -> AsyncIterator[Response]:
        try:
            async for item in handler(self, request, context):
                yield item
        except errors.QrmidError as exc:
            await context.abort(code_of(exc), str(exc))

    return wrapped
