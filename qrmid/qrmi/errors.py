"""QRMI's exceptions, and how qrmid's gRPC status codes become them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc


class QrmiError(RuntimeError):
    """Base class of every error this package raises."""


class EnvVarNotSetError(QrmiError):
    """A required environment variable was not set."""


class ConfigError(QrmiError):
    """A configuration value was missing or invalid."""


class UnsupportedResourceTypeError(QrmiError):
    """The resource type is unknown."""


class UnsupportedPayloadError(QrmiError):
    """The resource does not run this payload."""


class UnsupportedFunctionError(QrmiError):
    """The resource does not support this operation."""


class TaskNotReadyError(QrmiError):
    """The task is not in a state that allows the operation (e.g. its result while it runs)."""


class ResourceNotFoundError(QrmiError):
    """No such resource."""


class TaskNotFoundError(QrmiError):
    """No such task."""


class AuthenticationFailedError(QrmiError):
    """The daemon refused the caller or its lease."""


class InvalidInputError(QrmiError):
    """The daemon refused a value it was given (bad payload, limits)."""


@contextmanager
def translated(not_found: type[QrmiError] = ResourceNotFoundError) -> Iterator[None]:
    """Raise the QRMI exception matching a gRPC error from qrmid, with the daemon's message."""
    try:
        yield
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details() or str(exc)
        kind = {
            grpc.StatusCode.NOT_FOUND: not_found,
            grpc.StatusCode.FAILED_PRECONDITION: TaskNotReadyError,
            grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
            grpc.StatusCode.PERMISSION_DENIED: AuthenticationFailedError,
            grpc.StatusCode.UNAUTHENTICATED: AuthenticationFailedError,
            grpc.StatusCode.UNIMPLEMENTED: UnsupportedFunctionError,
        }.get(code, QrmiError)
        raise kind(f"{code.name}: {message}") from None
