"""The members of a qrmid cluster a client may call, and how a call fails over between them.

An address names one member or several, separated by commas, in any mix of the forms one member takes:
``unix:/path``, an absolute socket path, ``host:port``, or any gRPC target such as ``dns:///name:port``.
Each member gets its own gRPC channel, whose service config has gRPC retry a call that fails UNAVAILABLE (all but
Acquire) and, for a network target, spread calls over the addresses its name resolves to (``round_robin``,
skipping those whose health service does not answer SERVING). Across members — Unix sockets, mixed lists — the
client does the same itself: a call answered UNAVAILABLE, or whose connection fails, is tried on the next member, each member once
per call, after a short backoff, within the caller's deadline. An ``ipv4:``/``ipv6:`` target keeps gRPC's
own comma-separated address list and is one member.

Every failed call raises a ``qrmid.client_errors.QrmidError``; when no daemon answers, an ``Unreachable`` naming
the address tried and where it came from (``--address``, ``QRMID_ADDRESS`` or the default).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from qrmid.client_auth import ClientAuth
from qrmid.client_errors import QrmidError, Unreachable
from qrmid.ops.paths import SYSTEM_SOCKET, default_address

T = TypeVar("T")

FIRST_BACKOFF = 0.05  # seconds before the second member; doubled for each further one
MAX_BACKOFF = 0.5
# With several members, how long one has to take a connection before its calls fail UNAVAILABLE and move on (gRPC
# waits 20 s by default): a stopped member, or a host gone from the network, does not use up a call's deadline.
CONNECT_TIMEOUT_MS = 5000

# gRPC's part: retry UNAVAILABLE (on another address of the target when it has several). Not Acquire: it has no
# request id, so only the client's own retry across members makes it again, where the caller can see it.
RETRY = {"methodConfig": [{
    "name": [{"service": "qrmid.v1.QuantumResources"}, {"service": "qrmid.v1.AdminService"},
             {"service": "qrmid.v1.MetricsService"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]},
}, {"name": [{"service": "qrmid.v1.QuantumResources", "method": "Acquire"}]}]}
# A network target may resolve to several daemons: spread calls over them, skipping those whose health service
# does not answer SERVING (a daemon draining for shutdown). A Unix socket is one daemon: no health stream.
BALANCED = {**RETRY, "loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}


def service_config(target: str) -> str:
    """The gRPC service config of a member's channel."""
    return json.dumps(RETRY if target.startswith("unix") else BALANCED)

@dataclass(frozen=True, slots=True)
class Address:
    """The address a client calls and where it came from (``--address``, ``QRMID_ADDRESS``, ...), to say so when
    nothing answers there."""

    text: str
    origin: str


def resolve_address(address: str | Address | None = None) -> Address:
    """``address`` as given, else ``$QRMID_ADDRESS``, else the default socket; each with where it came from."""
    if isinstance(address, Address):
        return address
    if address:
        return Address(address, "the client's address argument")
    if from_env := os.environ.get("QRMID_ADDRESS"):
        return Address(from_env, "QRMID_ADDRESS")
    if os.geteuid() == 0:
        return Address(default_address(), "the default for root: the system daemon's socket")
    return Address(default_address(), "the default for a user who is not root: a daemon of your own (the system "
                                      f"daemon's socket, root's default, is {SYSTEM_SOCKET})")


def split_address(address: str | Address | None = None) -> list[str]:
    """The gRPC target of each member ``address`` names, else ``$QRMID_ADDRESS``, else the default socket.

    A bare absolute path means a Unix socket; ``unix:PATH``, ``HOST:PORT`` and other gRPC targets are taken as
    they are; ValueError for an empty member (``a,,b``) and for a network address without a port (gRPC would
    call port 443, where no qrmid listens).
    """
    resolved = resolve_address(address)
    text = resolved.text.strip()
    if text.startswith(("ipv4:", "ipv6:")):
        members = [text]
        hosts = [f"{text[:5]}{part}" for part in text[5:].split(",")]
    else:
        members = hosts = [part.strip() for part in text.split(",")]
    if not all(members):
        raise ValueError(f"address {text!r} (from {resolved.origin}) has an empty member: list members as "
                         "MEMBER,MEMBER,... (unix:/path, /path, host:port or a gRPC target such as dns:///name:port)")
    for host in hosts:
        if _lacks_port(host):
            raise ValueError(f"address {host!r} (from {resolved.origin}) has no port, so gRPC would call port 443, "
                             f"where no qrmid listens: write {host}:PORT with the port of the daemon's [daemon] "
                             "tcp setting, or a Unix socket path")
    return [f"unix:{member}" if member.startswith("/") else member for member in members]


def _lacks_port(member: str) -> bool:
    """Whether network address ``member`` (``host``, ``dns:///host``, ``ipv4:addr`` ...) leaves out the port."""
    if member.startswith(("dns:", "ipv4:", "ipv6:")):
        member = member.split(":", 1)[1]
        if member.startswith("//"):  # dns://[authority]/host:port
            member = member[2:].split("/", 1)[-1]
    elif member.startswith("/") or ":" in member.split("/", 1)[0] and not member.startswith("["):
        return False  # a socket path, host:port, or a target of another scheme (unix:, vsock:, ...)
    if member.startswith("["):  # [ipv6]:port
        return "]:" not in member
    return ":" not in member


def _backoff(attempt: int) -> float:
    return min(FIRST_BACKOFF * 2 ** (attempt - 1), MAX_BACKOFF)


class Members:
    """One channel per member; calls go to the member that answered last, and move on when it is unavailable."""

    def __init__(self, address: str | Address | None, auth: ClientAuth, options: list[tuple[str, Any]]) -> None:
        self.origin = resolve_address(address).origin
        self.targets = split_address(address)
        if len(self.targets) > 1:
            options = [*options, ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS)]  # its connect timeout
        self.channels = [auth.channel(target, options=[*options, ("grpc.service_config", service_config(target))])
                         for target in self.targets]
        self.current = 0

    @property
    def address(self) -> str:
        return ",".join(self.targets)

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels))

    def _order(self) -> list[int]:
        return [(self.current + step) % len(self.channels) for step in range(len(self.channels))]

    async def call(self, call: Callable[[grpc.aio.Channel, float | None], Awaitable[T]],
                   timeout: float | None) -> T:
        """``call(channel, timeout)`` on each member in turn until one does not answer UNAVAILABLE; the
        caller's ``timeout`` bounds the whole. The last member's error when none could, naming them all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        faults: list[str] = []
        for attempt, index in enumerate(self._order()):
            remaining = None if deadline is None else deadline - time.monotonic()
            if attempt:
                pause = _backoff(attempt)
                if remaining is not None and remaining <= pause:
                    break
                await asyncio.sleep(pause)
                remaining = None if remaining is None else remaining - pause
            try:
                result = await call(self.channels[index], remaining)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or len(self.channels) == 1:
                    raise self._error(index, exc) from None
                faults.append(f"{self.targets[index]}: {exc.details()}")
                continue
            self.current = index
            return result
        raise self._none_answered(faults)

    async def stream(self, open_stream: Callable[[grpc.aio.Channel], AsyncIterator[T]],
                     resume: Callable[[], None]) -> AsyncIterator[T]:
        """The messages of ``open_stream(channel)``; when a member fails UNAVAILABLE mid-way, ``resume()`` is
        called and the stream opened again on the next member, each member once between two messages."""
        faults: list[str] = []
        index = self.current
        while True:
            try:
                async for message in open_stream(self.channels[index]):
                    faults.clear()
                    self.current = index
                    yield message
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or len(self.channels) == 1:
                    raise self._error(index, exc) from None
                faults.append(f"{self.targets[index]}: {exc.details()}")
                if len(faults) >= len(self.channels):
                    raise self._none_answered(faults) from None
            index = (index + 1) % len(self.channels)
            resume()
            await asyncio.sleep(_backoff(len(faults)))

    def _error(self, index: int, error: grpc.aio.AioRpcError) -> QrmidError:
        """``error`` of member ``index`` as the client raises it: when no daemon answered there, saying which address
        was tried, where it came from, and what to check."""
        if isinstance(error, Unreachable):  # the socket is not there
            details = f"{error.details()} (address from {self.origin})"
        elif (error.code() == grpc.StatusCode.UNAVAILABLE and not isinstance(error, QrmidError)
              and self.channels[index].get_state() != grpc.ChannelConnectivity.READY):  # nothing took the connection
            details = (f"no qrmid daemon answers at {self.targets[index]} (address from {self.origin}): "
                       f"{error.details()}")
        else:
            return QrmidError.of(error)
        return Unreachable.make(grpc.StatusCode.UNAVAILABLE, f"{details}. {self._check()}")

    def _none_answered(self, faults: list[str]) -> Unreachable:
        return Unreachable.make(grpc.StatusCode.UNAVAILABLE,
                                f"no member of {self.address} (address from {self.origin}) could answer "
                                f"({'; '.join(faults)}). {self._check()}")

    def _check(self) -> str:
        """What to check when no daemon answers."""
        if self.origin.startswith("the default"):
            return ("Is `qrmid serve` running? If the daemon listens elsewhere, give its address with --address "
                    "or QRMID_ADDRESS")
        if len(self.targets) > 1:
            return "Does `qrmid serve` run at any of them, and are these their addresses?"
        return "Is `qrmid serve` running there, and is this its address?"
