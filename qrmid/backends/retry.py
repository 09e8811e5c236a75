"""Bounded, jittered retries for vendor HTTP calls (on tenacity): never infinite, always a reason."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar

import httpx
from tenacity import (
    AsyncRetrying,
    AttemptManager,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

# Called with ("retry" | "gave_up", the failure) on each retry and each give-up, e.g. by the daemon's metrics.
hooks: list[Callable[[str, BaseException], None]] = []
# Called with (what was tried, the failure) on each failed attempt in this context before it is retried: a
# resource's status check shows an unreachable backend at once, while the retries go on.
failed_attempt: ContextVar[Callable[[str, BaseException], None] | None] = ContextVar("failed_attempt", default=None)


class Transient(Exception):
    """A failure worth retrying: 5xx, 408, 429 on reads, a timeout or a dropped connection."""


class GaveUp(Exception):
    """Retries ran out; the message says what kept failing and for how long."""


async def attempts(what: str, deadline: float, max_wait: float = 5.0) -> AsyncIterator[AttemptManager]:
    """Attempts at ``what`` with jittered exponential backoff (0.5 s up to ``max_wait``) for ``deadline`` s.

    Raise ``Transient`` (or let an httpx transport error out) inside an attempt to retry it; when the
    deadline passes, ``GaveUp`` names the last failure.
    """
    retrying = AsyncRetrying(
        retry=retry_if_exception_type((Transient, httpx.TransportError)),
        wait=wait_random_exponential(multiplier=0.5, max=max_wait),
        stop=stop_after_delay(deadline),
        reraise=True,
        before_sleep=lambda state: _retrying(what, state),
    )
    try:
        async for attempt in retrying:
            yield attempt
    except (Transient, httpx.TransportError) as exc:
        _report("gave_up", exc)
        detail = str(exc) or type(exc).__name__
        raise GaveUp(f"{what} kept failing for {deadline:g} s: {detail}") from exc


def _retrying(what: str, state: RetryCallState) -> None:
    if state.outcome is not None and (error := state.outcome.exception()) is not None:
        _report("retry", error)
        if (listener := failed_attempt.get()) is not None:
            listener(what, error)


def endpoint_of(error: BaseException | None) -> str | None:
    """``host[:port]`` of the failed HTTP call ``error`` (or what it was raised from), when it says."""
    while error is not None:
        if isinstance(error, httpx.RequestError):
            try:
                url = error.request.url
            except RuntimeError:  # an error raised without its request
                return None
            return f"{url.host}:{url.port}" if url.port else url.host
        error = error.__cause__
    return None


def _report(event: str, error: BaseException) -> None:
    for hook in hooks:
        hook(event, error)
