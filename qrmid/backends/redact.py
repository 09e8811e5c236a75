"""Secrets out of text that leaves an adapter: a vendor's error body can echo a key id or a token (AWS's XML names
the ``AWSAccessKeyId``), and task reasons, logs, exceptions and GetTarget errors reach callers and the journal."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar
from urllib.parse import quote

from qrmid.backends.base import BackendStatus, JobStatus, Output

MASK = "[redacted]"
SHORT = 8  # a shorter secret is masked only where it stands alone, not inside words
TRIVIAL = 4  # nor is one shorter than this: it guards nothing (a test's "s"), and masking it would garble "3 s"
LEARNED = 8  # run-time tokens remembered (the current one and a few before it)


class Redactor:
    """Masks every configured secret and key id, and the tokens learned at run time, in any text."""

    def __init__(self, *secrets: str | None) -> None:
        self._configured = {secret for secret in secrets if secret}
        self._learned: deque[str] = deque(maxlen=LEARNED)
        self._pattern = self._compile()

    def learn(self, secret: str) -> None:
        """Mask ``secret`` too from now on (e.g. a bearer token just issued)."""
        if secret and secret not in self._learned and secret not in self._configured:
            self._learned.append(secret)
            self._pattern = self._compile()

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def status(self, value: Any) -> Any:
        """``value`` with the reason or logs it carries (JobStatus, BackendStatus, Output) masked."""
        if isinstance(value, JobStatus | BackendStatus) and value.reason:
            return dataclasses.replace(value, reason=self(value.reason))
        if isinstance(value, Output) and value.logs:
            return dataclasses.replace(value, logs=self(value.logs))
        return value

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Let an exception out only once no secret is left in its text or in the text of its causes: a masked
        copy (of the same type when it takes a message) replaces it, without the chain."""
        try:
            yield
        except Exception as exc:
            if all(self(text) == text for text in _texts(exc)):
                raise
            message = self(str(exc))
            try:
                clean = type(exc)(message)
            except Exception:
                clean = RuntimeError(message)
            if str(clean) != message:
                clean = RuntimeError(message)
            raise clean from None

    def _compile(self) -> re.Pattern[str] | None:
        forms = {form for secret in (*self._configured, *self._learned) for form in (secret, quote(secret, safe=""))
                 if len(form) >= TRIVIAL}
        if not forms:
            return None
        parts = [re.escape(form) if len(form) >= SHORT else rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])"
                 for form in sorted(forms, key=len, reverse=True)]
        return re.compile("|".join(parts))


def _texts(exc: BaseException) -> Iterator[str]:
    """The text of ``exc`` and of every exception it was raised from or during."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        current = current.__cause__ or current.__context__


class Redacting(Protocol):
    redact: Redactor


P = ParamSpec("P")
R = TypeVar("R")


def redacting(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """An adapter method whose errors and returned reasons or logs are masked by the adapter's ``redact``."""

    @functools.wraps(method)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        adapter: Redacting = args[0]  # type: ignore[assignment]
        with adapter.redact.errors():
            result: R = adapter.redact.status(await method(*args, **kwargs))
            return result

    return wrapped
