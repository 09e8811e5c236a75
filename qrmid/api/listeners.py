"""The daemon's listeners: the Unix socket and the optional TCP address, each with its own authentication
and (TCP) TLS.

Each listener gets its own ``grpc.aio.Server`` carrying the same services: a server interceptor sees no
local address, so one server per listener is how a call's authentication follows from where it came in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from qrmid.api.auth import Admins, Authenticator, AuthInterceptor, AuthSetupError, DaemonUser, Munge, load_tokens
from qrmid.api.refusals import RefusalLog
from qrmid.ops import munge
from qrmid.ops.config import Config, DaemonSettings

log = logging.getLogger(__name__)

OWN_DESCRIPTORS = 256  # kept for the daemon's own files: journal, vendor connections, workers, munged


@dataclass(frozen=True, slots=True)
class Listener:
    """Where to listen, how callers there authenticate, and the TLS credentials when it is TLS."""

    address: str
    auth: str
    authenticator: Authenticator
    refusals: RefusalLog  # where its refused calls are logged (one log shared by every listener)
    credentials: grpc.ServerCredentials | None = None
    binds: str = ""  # the address bound, when not ``address`` itself (see staging_socket)

    def describe(self) -> str:
        return f"{self.address} (auth {self.auth}{', TLS' if self.credentials else ''})"


def listeners(config: Config) -> list[Listener]:
    """The listeners ``config`` asks for; AuthSetupError when one cannot be set up safely."""
    daemon, auth = config.daemon, config.auth
    admins = Admins(auth.admin_group)
    modes = {daemon.auth} | ({daemon.tcp_auth} if daemon.tcp else set())
    tokens = load_tokens(auth.tokens_file) if "token" in modes and auth.tokens_file else None
    munge_auth = Munge(admins, auth.munge_socket, auth.munge_threads) if "munge" in modes else None
    refusals = RefusalLog(auth.failure_log_seconds)

    def authenticator(mode: str) -> Authenticator:
        if mode == "munge":
            assert munge_auth is not None
            return munge_auth
        if mode == "token":
            assert tokens is not None, "the config requires tokens_file with auth = token"
            return tokens
        return DaemonUser()

    found = [Listener(f"unix:{daemon.socket}", daemon.auth, authenticator(daemon.auth), refusals,
                      binds=f"unix:{staging_socket(daemon.socket)}")]
    if daemon.tcp:
        found.append(Listener(daemon.tcp, daemon.tcp_auth, authenticator(daemon.tcp_auth), refusals, _tls(config)))
    return found


def staging_socket(socket: Path) -> Path:
    """Where the Unix listener binds before the daemon renames it onto ``socket``. gRPC removes the path it bound
    when it stops, whatever is there by then; bound at this private name, it removes nothing, and the daemon
    removes the socket only while it is still the one it bound."""
    return socket.with_name(f".{os.getpid():x}")


def _tls(config: Config) -> grpc.ServerCredentials | None:
    daemon = config.daemon
    if daemon.tls_cert is None or daemon.tls_key is None:
        return None

    def read(path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise AuthSetupError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None

    key = read(daemon.tls_key, "key")
    mode = stat.S_IMODE(daemon.tls_key.stat().st_mode)
    if mode & 0o077:
        raise AuthSetupError(f"TLS key {daemon.tls_key} has mode {mode:04o}, readable by group or other users; "
                             f"run: chmod 600 {daemon.tls_key}")
    ca = read(daemon.tls_client_ca, "client CA bundle") if daemon.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, read(daemon.tls_cert, "certificate"))], root_certificates=ca,
                                       require_client_auth=ca is not None)


def connection_options(daemon: DaemonSettings, listeners: int) -> list[tuple[str, int]]:
    """gRPC server options bounding connections: idle ones and unfinished handshakes are closed, each carries at
    most ``max_streams_per_connection`` calls at once, and each listener takes at most ``max_connections``,
    lowered so that all of them together leave ``OWN_DESCRIPTORS`` of the open files limit to the daemon. gRPC has
    no per-peer cap (see docs/operations.md)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fitting = max(16, (soft - OWN_DESCRIPTORS) // max(listeners, 1))
    if fitting < daemon.max_connections:
        log.warning("max_connections lowered from %d to %d per listener to fit the open files limit (%d); raise "
                    "LimitNOFILE", daemon.max_connections, fitting, soft)
    return [("grpc.max_connection_idle_ms", int(daemon.idle_connection_seconds * 1000)),
            ("grpc.server_handshake_timeout_ms", int(daemon.handshake_timeout_seconds * 1000)),
            ("grpc.max_allowed_incoming_connections", min(daemon.max_connections, fitting)),
            ("grpc.max_concurrent_streams", daemon.max_streams_per_connection)]


def build_servers(found: list[Listener], options: list[tuple[str, int]],
                  register: Callable[[grpc.aio.Server], None],
                  outer: Sequence[grpc.aio.ServerInterceptor] = (),
                  inner: Sequence[grpc.aio.ServerInterceptor] = ()) -> list[grpc.aio.Server]:
    """One server per listener, bound to its address, with ``register`` adding the services to each; the
    ``outer`` interceptors (e.g. RPC metrics) run before authentication, the ``inner`` ones (per-client
    limits) after it."""
    servers = []
    for listener in found:
        server = grpc.aio.server(interceptors=[*outer, AuthInterceptor(listener.authenticator, listener.refusals),
                                                              *inner],
                                 options=options)
        register(server)
        try:
            if listener.credentials is None:
                server.add_insecure_port(listener.binds or listener.address)
            else:
                server.add_secure_port(listener.binds or listener.address, listener.credentials)
        except RuntimeError as exc:
            raise AuthSetupError(f"cannot listen on {listener.address}: {exc}") from None
        servers.append(server)
    return servers


def check_socket(path: Path, auth: str) -> None:
    """Refuse an ``auth = "none"`` socket that group or other users could open."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if auth == "none" and mode & 0o077:
        raise AuthSetupError(f"socket {path} has mode {mode:04o} but auth is none: other users would act as the "
                             "daemon's user; use socket_mode 0600 or auth = munge")


async def probe_munge(config: Config, found: list[Listener]) -> None:
    """Warn at start when a MUNGE listener cannot reach munged (it may come up later)."""
    if any(listener.auth == "munge" for listener in found):
        try:
            await asyncio.to_thread(munge.encode, b"", config.auth.munge_socket or None)
        except munge.MungeError as exc:
            log.warning("MUNGE authentication will fail until munged is reachable: %s", exc)
