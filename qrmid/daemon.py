"""The daemon: builds the broker from the config, serves it over gRPC, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qrmid.api.servicer import QuantumResources
from qrmid.backends import registry
from qrmid.core.broker import Broker, Policy
from qrmid.core.leases import LeaseTable
from qrmid.core.resource import Resource
from qrmid.core.scheduler import Scheduler
from qrmid.ops import systemd
from qrmid.ops.config import Config
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 107
SERVICE = pb.DESCRIPTOR.services_by_name["QuantumResources"].full_name


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


def build_broker(config: Config) -> Broker:
    """Resources, schedulers and leases as the config describes them."""
    resources = []
    for settings in config.resources:
        adapter = registry.build(settings)
        scheduler = Scheduler(settings.name, adapter, queue_limit=settings.queue_limit,
                              poll_interval=settings.poll_interval, busy_deadline=settings.busy_deadline_seconds)
        resources.append(Resource(settings.name, settings.type, adapter, scheduler,
                                  status_interval=settings.status_interval, max_leases=settings.max_leases))
    leases = LeaseTable(config.leases.default_ttl_seconds, config.leases.max_ttl_seconds)
    policy = Policy(max_payload_bytes=config.tasks.max_payload_bytes, require_lease=config.leases.required,
                    cancel_on_release=config.leases.cancel_tasks_on_release, retain_tasks=config.tasks.retain)
    return Broker(resources, leases, policy)


class Daemon:
    """One qrmid: a broker behind a gRPC server with health checking and reflection."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.broker = build_broker(config)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None

    @property
    def socket(self) -> Path:
        return self.config.daemon.socket

    async def start(self) -> None:
        """Start the backends, bind the listeners and report SERVING."""
        _prepare_socket(self.socket)
        limit = self.config.daemon.max_message_bytes
        self.server = server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                                        ("grpc.max_send_message_length", limit)])
        pb_grpc.add_QuantumResourcesServicer_to_server(QuantumResources(self.broker), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        server.add_insecure_port(f"unix:{self.socket}")
        if self.config.daemon.tcp:
            try:
                server.add_insecure_port(self.config.daemon.tcp)
            except RuntimeError as exc:
                raise StartupError(f"cannot listen on TCP {self.config.daemon.tcp}: {exc}") from None
        await self.broker.start()
        await server.start()
        os.chmod(self.socket, int(self.config.daemon.socket_mode, 8))
        for service in ("", SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on unix:%s%s", ", ".join(self.broker.resources), self.socket,
                 f" and tcp {self.config.daemon.tcp}" if self.config.daemon.tcp else "")

    async def stop(self) -> None:
        """Take no new tasks, let running ones finish within the grace period, cancel the rest, close."""
        await self.health.enter_graceful_shutdown()
        await self.broker.stop(self.config.daemon.shutdown_grace_seconds)
        if self.server is not None:
            await self.server.stop(grace=1.0)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, telling systemd when ready and when stopping."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        systemd.notify("READY=1\nSTATUS=serving")
        await stop.wait()
        log.info("stopping: running tasks get %gs to finish", self.config.daemon.shutdown_grace_seconds)
        systemd.notify("STOPPING=1\nSTATUS=stopping")
        await self.stop()


def _prepare_socket(path: Path) -> None:
    """Make the socket's directory (private when we create it) and clear a stale socket file."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise StartupError(f"socket path {path} is longer than the {MAX_SOCKET_PATH} bytes Unix sockets allow")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left behind by a daemon that died
    else:
        raise StartupError(f"another daemon is already serving on {path}")
    finally:
        probe.close()
