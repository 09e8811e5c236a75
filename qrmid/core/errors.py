"""Domain errors. The API layer maps each class onto one gRPC status code."""

from __future__ import annotations


class QrmidError(Exception):
    """Base of every error a caller can act on; the message is shown to the caller as is."""


class InvalidArgument(QrmidError):
    """The request or its payload cannot be accepted as given."""


class NotFound(QrmidError):
    """An unknown resource, task or lease."""


class FailedPrecondition(QrmidError):
    """The request is valid but the object is not in a state that allows it."""


class ResourceExhausted(QrmidError):
    """A queue or a limit is full; the message names the limit."""


class PermissionDenied(QrmidError):
    """The caller may not do this; the message says why."""


class Unavailable(QrmidError):
    """The daemon or the resource cannot take the request now; retrying later may succeed."""


class DeadlineExceeded(QrmidError):
    """A call waited as long as it may (its wait or the caller's deadline) without getting what it waited for."""
