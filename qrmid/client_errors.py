"""The errors qrmid's Python clients raise: the daemon's status code and message, printed as a person reads them.

Each is a ``grpc.aio.AioRpcError`` (so ``except grpc.RpcError`` still catches it, and ``code()`` and ``details()``
work as before) whose ``str()`` is ``CODE: message`` rather than gRPC's multi-line repr; a subclass per status code
lets a caller catch one kind of refusal::

    from qrmid.client_errors import InvalidArgument

    try:
        qrmid.start_task("local-qiskit", payload)
    except InvalidArgument as refused:
        print(refused.details())    # what is wrong with the payload, and how to fix it
"""

from __future__ import annotations

import grpc


class QrmidError(grpc.aio.AioRpcError):
    """A call the daemon refused, or one no daemon answered; ``code()`` and ``details()`` say which and why."""

    def __str__(self) -> str:
        return f"{self.code().name}: {self.details() or 'no details given'}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError, details: str | None = None) -> QrmidError:
        """``error`` as the QrmidError subclass of its code, with ``details`` in place of its own when given."""
        if isinstance(error, QrmidError) and details is None:
            return error
        kind = _KINDS.get(error.code(), QrmidError)
        return kind(error.code(), error.initial_metadata(), error.trailing_metadata(),
                    error.details() if details is None else details, error.debug_error_string())

    @classmethod
    def make(cls, code: grpc.StatusCode, details: str) -> QrmidError:
        """An error the client raises itself, before or instead of a call: of this class when it is a subclass,
        else the class of ``code``."""
        kind = cls if cls is not QrmidError else _KINDS.get(code, QrmidError)
        return kind(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class InvalidArgument(QrmidError):
    """The request is wrong: a bad payload, an unknown key, a value out of range."""


class NotFound(QrmidError):
    """No such resource, task or lease (the message names those that exist where it can)."""


class AlreadyExists(QrmidError):
    """What the call would create exists already."""


class PermissionDenied(QrmidError):
    """The caller may not do this (another user's task, an admin call)."""


class Unauthenticated(QrmidError):
    """The daemon could not tell who is calling (no or a bad MUNGE credential or token)."""


class ResourceExhausted(QrmidError):
    """A limit is reached (queue, quota, message size); the message names the limit."""


class FailedPrecondition(QrmidError):
    """Not now, in this state (a result of an unfinished task, a lease required)."""


class Unavailable(QrmidError):
    """The daemon, or what it needs, cannot serve now; retrying later may succeed."""


class Unreachable(Unavailable):
    """No daemon answered at the address: the message says which address was tried and where it came from."""


class DeadlineExceeded(QrmidError):
    """No answer within the call's timeout."""


class Unimplemented(QrmidError):
    """The daemon does not serve this call (an older version, or not in this mode)."""


class Internal(QrmidError):
    """The daemon failed in a way it did not expect; its log says more."""


_KINDS: dict[grpc.StatusCode, type[QrmidError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
}
