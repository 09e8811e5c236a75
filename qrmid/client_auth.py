"""How a client proves who it is and checks the daemon over TLS; shared by ``AsyncClient`` and the CLI.

Settings come from arguments, else the environment:

- ``QRMID_AUTH``: ``none`` (default), ``munge`` (a fresh MUNGE credential on every call) or ``token``;
- ``QRMID_MUNGE_SOCKET``: munged's socket when not libmunge's default;
- ``QRMID_TOKEN_FILE``: a file holding the bearer token (keep it ``chmod 600``);
- ``QRMID_TLS_CA``: PEM CA bundle that signed the daemon's certificate; setting it turns TLS on;
- ``QRMID_TLS_CERT`` / ``QRMID_TLS_KEY``: a client certificate and key, for daemons that require one;
- ``QRMID_SOCKET_OWNER``: the user (name or uid) whose daemon a Unix socket must be; by default the caller,
  or root for ``/run/qrmid/qrmid.sock``. Before every call the socket and its directories are checked
  (``qrmid.ops.sockets``): another user's socket gets nothing, neither credential nor payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import grpc

from qrmid.client_errors import Unavailable, Unreachable
from qrmid.ops import munge, sockets
from qrmid.ops.paths import SYSTEM_SOCKET

MUNGE_METADATA = "x-qrmid-munge"  # the daemon's qrmid.api.auth reads the same keys
AUTHORIZATION = "authorization"

AuthMode = Literal["none", "munge", "token"]

# Each channel gets connections of its own: by default gRPC shares them between the channels of a process, so a
# new client would wait out the reconnect backoff (1 s, then 1.6 s more, ...) an earlier client started while
# the daemon was down, failing UNAVAILABLE against a daemon that is serving again
OWN_CONNECTIONS = ("grpc.use_local_subchannel_pool", 1)


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """A client's authentication and TLS settings."""

    mode: AuthMode = "none"
    munge_socket: str | None = None
    token: str | None = None
    tls_ca: bytes | None = None
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    socket_owner: int | None = None  # uid a Unix socket must belong to; None: see socket_owner_for()

    @classmethod
    def resolve(cls, auth: str | None = None, *, token_file: str | Path | None = None, munge_socket: str | None = None,
                tls_ca: str | Path | None = None, tls_cert: str | Path | None = None,
                tls_key: str | Path | None = None, socket_owner: str | None = None) -> ClientAuth:
        """Settings from the arguments given, the environment for the rest; ValueError when inconsistent."""
        env = os.environ.get
        owner = socket_owner or env(sockets.OWNER_ENV)
        mode = auth or env("QRMID_AUTH") or "none"
        if mode not in get_args(AuthMode):
            raise ValueError(f"auth must be none, munge or token, not {mode!r}")
        token = None
        if mode == "token":
            path = token_file or env("QRMID_TOKEN_FILE")
            if not path:
                raise ValueError("auth = token needs a token file (QRMID_TOKEN_FILE or --token-file)")
            token = Path(path).read_text().strip()
            if not token:
                raise ValueError(f"token file {path} is empty")
        ca, cert, key = (_read(value or env(name)) for value, name in (
            (tls_ca, "QRMID_TLS_CA"), (tls_cert, "QRMID_TLS_CERT"), (tls_key, "QRMID_TLS_KEY")))
        if (cert is None) != (key is None):
            raise ValueError("a TLS client certificate needs its key, and a key its certificate")
        if cert is not None and ca is None:
            raise ValueError("a TLS client certificate is only sent over TLS: set the CA bundle too (QRMID_TLS_CA)")
        return cls(cast(AuthMode, mode), munge_socket or env("QRMID_MUNGE_SOCKET") or None, token, ca, cert, key,
                   sockets.parse_owner(owner) if owner else None)

    def socket_owner_for(self, path: Path) -> int:
        """The uid the socket at ``path`` must belong to (root is always accepted too): the configured owner,
        else root for the system socket, else the caller (a private daemon)."""
        if self.socket_owner is not None:
            return self.socket_owner
        return sockets.ROOT if path == SYSTEM_SOCKET else os.geteuid()

    def channel(self, target: str, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        """An asyncio channel to ``target`` that authenticates every call, and first checks that a Unix
        socket belongs to the expected owner."""
        interceptors: list[grpc.aio.ClientInterceptor] = []
        if target.startswith("unix:"):
            path = Path(target.removeprefix("unix:").removeprefix("//"))
            check = _SocketCheck(path, self.socket_owner_for(path))
            interceptors += [_UnarySocketCheck(check), _StreamSocketCheck(check)]
        if self.mode != "none":
            interceptors += [_UnaryMetadata(self._metadata), _StreamMetadata(self._metadata)]
        options = [*options, OWN_CONNECTIONS]
        if self.tls_ca is None:
            return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        credentials = grpc.ssl_channel_credentials(self.tls_ca, self.tls_key, self.tls_cert)
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)

    async def _metadata(self) -> tuple[str, str]:
        if self.mode == "munge":
            return MUNGE_METADATA, await asyncio.to_thread(munge.encode, b"", self.munge_socket)
        return AUTHORIZATION, f"Bearer {self.token}"


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class _Metadata:
    """Adds one freshly made metadata entry to every call."""

    def __init__(self, entry: Callable[[], Awaitable[tuple[str, str]]]) -> None:
        self.entry = entry

    async def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*await self.entry())
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                          details.wait_for_ready)


# grpc.aio files a channel's interceptor under one call type only, so each type gets its own class.
class _UnaryMetadata(_Metadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        return await continuation(await self._details(details), request)


class _StreamMetadata(_Metadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        return await continuation(await self._details(details), request)


class _SocketCheck:
    """Refuses a call, before anything is sent, when the socket is not the expected owner's. Once a socket has
    passed, a call whose socket is still that file (same device and inode) needs no full check: only its owner or
    root could have put another one there."""

    def __init__(self, path: Path, owner: int) -> None:
        self.path = path
        self.owner = owner
        self._passed: tuple[int, int] | None = None

    def __call__(self) -> None:
        if self._passed is not None:
            with contextlib.suppress(OSError):
                found = os.lstat(self.path)
                if (found.st_dev, found.st_ino) == self._passed:
                    return
            self._passed = None
        try:
            sockets.check_socket(self.path, self.owner)
            found = os.lstat(self.path)
        except sockets.UnsafeSocket as exc:
            trust = "" if exc.foreign is None else (f"; if {sockets.login(exc.foreign)} runs the daemon you mean, set "
                                                    f"{sockets.OWNER_ENV}={sockets.login(exc.foreign)}")
            raise _unavailable(f"not connecting to {self.path}: {exc}; nothing was sent{trust}") from None
        except FileNotFoundError as exc:
            raise Unreachable.make(grpc.StatusCode.UNAVAILABLE,
                                   f"no daemon at {self.path}: {exc.filename} does not exist") from None
        except OSError as exc:
            raise _unavailable(f"cannot check the socket {self.path}: {exc.filename}: {exc.strerror}") from None
        self._passed = (found.st_dev, found.st_ino)


def _unavailable(details: str) -> Unavailable:
    return Unavailable.make(grpc.StatusCode.UNAVAILABLE, details)


class _UnarySocketCheck(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, check: _SocketCheck) -> None:
        self.check = check

    async def intercept_unary_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        self.check()
        return await continuation(details, request)


class _StreamSocketCheck(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, check: _SocketCheck) -> None:
        self.check = check

    async def intercept_unary_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        self.check()
        return await continuation(details, request)
