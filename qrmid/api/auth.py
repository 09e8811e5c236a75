"""Caller authentication, one authenticator per listener, applied by a server interceptor.

- ``none``: every caller is the daemon's user (only on a Unix socket no other user can open);
- ``munge``: metadata ``x-qrmid-munge`` carries a fresh MUNGE credential; ``munged`` decodes it (and refuses
  expired, rewound and replayed ones) and the caller is the uid it proves. Decoding runs on a small thread pool
  of its own, so no other blocking work (payload checks, file I/O) can hold up authentication;
- ``token``: metadata ``authorization: Bearer <token>`` names a service from the tokens file.

The health service answers without credentials, so probes and ``wait``-style checks need none. Refused calls
are logged through a :class:`~qrmid.api.refusals.RefusalLog`, so a client retrying bad credentials cannot flood
the log.
"""

from __future__ import annotations

import asyncio
import grp
import hmac
import os
import pwd
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from qrmid.api.identity import Identity, bind, daemon_user
from qrmid.api.refusals import RefusalLog
from qrmid.client_auth import AUTHORIZATION, MUNGE_METADATA
from qrmid.ops import munge
from qrmid.ops.private_files import exposed

UNAUTHENTICATED_SERVICES = ("/grpc.health.v1.Health/",)


class AuthError(Exception):
    """The caller could not be authenticated; ``code`` is the status to answer with."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED) -> None:
        super().__init__(message)
        self.code = code


class AuthSetupError(Exception):
    """An authenticator cannot be built from the config; the message says why."""


class Authenticator(Protocol):
    """Turns an RPC's metadata into the caller's identity, or raises AuthError."""

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Identity: ...


def _value(metadata: Sequence[tuple[str, str | bytes]], key: str) -> str | None:
    values = [value for name, value in metadata if name == key]
    if len(values) > 1:
        raise AuthError(f"send one '{key}' metadata entry, not {len(values)}")
    if not values:
        return None
    value = values[0]
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class DaemonUser:
    """``auth = "none"``: the listener is private to the daemon's user, so every caller is that user."""

    def __init__(self) -> None:
        self.identity = daemon_user()

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Identity:
        return self.identity


class Admins:
    """Who administers the daemon: root, and the members of ``admin_group`` when one is configured."""

    def __init__(self, admin_group: str) -> None:
        self.gid: int | None = None
        if admin_group:
            try:
                self.gid = grp.getgrnam(admin_group).gr_gid
            except KeyError:
                raise AuthSetupError(f"[auth] admin_group {admin_group!r} is not a group on this host") from None

    def user(self, uid: int, gid: int) -> Identity:
        """The identity of Unix user ``uid`` (blocking: asks the name service)."""
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return Identity(str(uid), uid, gid, admin=uid == 0)
        admin = uid == 0 or (self.gid is not None and self.gid in os.getgrouplist(name, gid))
        return Identity(name, uid, gid, admin=admin)


class Munge:
    """``auth = "munge"``: the caller is whoever encoded the MUNGE credential in ``x-qrmid-munge``."""

    def __init__(self, admins: Admins, socket: str = "", threads: int = 4) -> None:
        self.admins = admins
        self.socket = socket or None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="qrmid munge")

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Identity:
        credential = _value(metadata, MUNGE_METADATA)
        if not credential:
            raise AuthError(f"this listener needs a MUNGE credential in '{MUNGE_METADATA}' metadata "
                            "(qrmid clients send one with QRMID_AUTH=munge)")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._decode, credential)

    def _decode(self, credential: str) -> Identity:
        try:
            proved = munge.decode(credential, self.socket)
        except munge.MungeError as exc:
            if exc.unreachable:
                raise AuthError(f"the daemon cannot reach munged to check credentials: {exc}",
                                grpc.StatusCode.UNAVAILABLE) from None
            raise AuthError(f"MUNGE credential refused: {exc}{_HINTS.get(exc.code, '')}") from None
        return self.admins.user(proved.uid, proved.gid)


_HINTS = {
    munge.EMUNGE_CRED_REPLAYED: " (each call needs a fresh credential: encode one per call)",
    munge.EMUNGE_CRED_EXPIRED: " (encode the credential just before the call; check the clocks agree)",
    munge.EMUNGE_CRED_REWOUND: " (the encoding host's clock is ahead of this one)",
}


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of the tokens file."""

    token: bytes
    identity: Identity


class Tokens:
    """``auth = "token"``: ``authorization: Bearer <token>`` names a service from the tokens file."""

    def __init__(self, services: list[Service]) -> None:
        self.services = services

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Identity:
        header = _value(metadata, AUTHORIZATION)
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("this listener needs 'authorization: Bearer <token>' metadata with a token from the "
                            "daemon's tokens file (qrmid clients send it with QRMID_AUTH=token QRMID_TOKEN_FILE=...)")
        offered = token.strip().encode()
        found = None
        for service in self.services:  # compare with every entry, in constant time, so timing tells nothing
            if hmac.compare_digest(service.token, offered):
                found = service.identity
        if found is None:
            raise AuthError("unknown bearer token")
        return found


def load_tokens(path: Path) -> Tokens:
    """The tokens file: TOML ``[[token]]`` tables with ``name``, ``token`` and optional ``admin``. It must be
    owned by the daemon's user and closed to everyone else; AuthSetupError otherwise."""
    try:
        info = path.stat()
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise AuthSetupError(f"tokens file {path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuthSetupError(f"tokens file {path}: not valid TOML: {exc}") from None
    if fault := exposed(path, info, "tokens file"):
        raise AuthSetupError(fault)
    entries = doc.get("token")
    if not isinstance(entries, list) or not entries:
        raise AuthSetupError(f"tokens file {path}: no [[token]] entries")
    services: list[Service] = []
    for index, entry in enumerate(entries):
        name, token, admin = entry.get("name"), entry.get("token"), entry.get("admin", False)
        unknown = set(entry) - {"name", "token", "admin"}
        if unknown or not isinstance(name, str) or not name or not isinstance(token, str) \
                or len(token) < 16 or not isinstance(admin, bool):
            raise AuthSetupError(f"tokens file {path}: token[{index}] needs a non-empty 'name', a 'token' of at "
                                 "least 16 characters and optionally 'admin' = true/false, nothing else")
        services.append(Service(token.encode(), Identity(name, admin=admin)))
    names = [service.identity.name for service in services]
    if len(set(names)) != len(names):
        raise AuthSetupError(f"tokens file {path}: each service name may appear once")
    if len({service.token for service in services}) != len(services):
        raise AuthSetupError(f"tokens file {path}: two services share a token")
    return Tokens(services)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call before its handler runs and binds the caller's identity to it."""

    def __init__(self, authenticator: Authenticator, refusals: RefusalLog) -> None:
        self.authenticator = authenticator
        self.refusals = refusals

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(UNAUTHENTICATED_SERVICES):
            return handler
        authenticate = self._authenticate
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await authenticate(context)
                return await inner(request, context)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(unary, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
        inner_stream = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await authenticate(context)
            async for response in inner_stream(request, context):
                yield response

        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(streaming, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> None:
        try:
            identity = await self.authenticator.authenticate(context.invocation_metadata() or ())
        except AuthError as exc:
            self.refusals.refused(context.peer(), str(exc))
            await context.abort(exc.code, str(exc))
        bind(identity)
