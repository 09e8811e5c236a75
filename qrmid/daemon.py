"""The daemon: builds the broker from the config, serves it over gRPC, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from qrmid.api import listeners, reflection
from qrmid.api.admin import AdminService
from qrmid.api.limits import ClientLimits, LimitsInterceptor
from qrmid.api.metrics import MetricsService
from qrmid.api.servicer import QuantumResources
from qrmid.api.telemetry import RpcTelemetry
from qrmid.backends import registry
from qrmid.backends.checks import InputBounds
from qrmid.backends.settings import ResourceSettings
from qrmid.core.broker import Broker, Policy
from qrmid.core.errors import FailedPrecondition, InvalidArgument
from qrmid.core.leases import LeaseTable
from qrmid.core.pool import Pool, Route
from qrmid.core.queue import PriorityClass, SchedulingPolicy
from qrmid.core.reload import Changes, Reloader
from qrmid.core.resource import Resource
from qrmid.core.scheduler import Scheduler
from qrmid.core.slurm import Scontrol, SlurmJobs
from qrmid.core.slurm_gate import SlurmGate
from qrmid.core.usage import UsageWeights
from qrmid.core.validation import Validation, ValidationLimits
from qrmid.core.windows import Windows, planned
from qrmid.ops import logging as logs
from qrmid.ops import sockets, systemd
from qrmid.ops.accounting import Ledger
from qrmid.ops.config import (
    Config,
    ConfigError,
    SchedulingSettings,
    SlurmSettings,
    ValidationSettings,
    WindowsSettings,
    load,
)
from qrmid.ops.metrics import Metrics
from qrmid.ops.pool_config import PoolSettings, dispatch_groups
from qrmid.store.journal import Journal, JournalError
from qrmid.store.members import Members
from qrmid.store.postgres import PostgresStore, StoreError
from qrmid.store.spool import Spool, SpoolError
from qrmid.v1 import admin_pb2_grpc, metrics_pb2_grpc
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 107
SERVICE = pb.DESCRIPTOR.services_by_name["QuantumResources"].full_name
METRICS_SERVICE = "qrmid.v1.MetricsService"
ADMIN_SERVICE = "qrmid.v1.AdminService"
RESTART_SECTIONS = ("auth", "metrics", "limits", "scheduling", "journal", "cluster", "validation")  # read once, at start


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


def build_broker(config: Config) -> Broker:
    """Resources, schedulers and leases as the config describes them."""
    built = {settings.name: build_resource(config, settings) for settings in config.resources
             if not isinstance(settings, PoolSettings)}
    built.update({settings.name: build_pool(config, settings, built) for settings in config.resources
                  if isinstance(settings, PoolSettings)})
    resources = [built[settings.name] for settings in config.resources]
    leases = LeaseTable(config.leases.default_ttl_seconds, config.leases.max_ttl_seconds)
    broker = Broker(resources, leases, _policy(config))
    broker.slurm = _slurm(config.slurm)
    broker.validation = _validation(config.validation)
    return broker


def build_resource(config: Config, settings: registry.ResourceConfig) -> Resource:
    """One configured resource: its adapter and its scheduler."""
    adapter = registry.build(settings)
    scheduler = Scheduler(settings.name, adapter, queue_limit=settings.queue_limit,
                          poll_interval=settings.poll_interval, busy_deadline=settings.busy_deadline_seconds,
                          policy=_scheduling(config.scheduling, settings))
    scheduler.leading = config.cluster is None  # a cluster member dispatches a resource once elected for it
    resource = Resource(settings.name, settings.type, adapter, scheduler,
                        status_interval=settings.status_interval, max_leases=settings.max_leases)
    resource.dispatch = settings.dispatch
    resource.min_slots_cap = settings.min_slots_cap
    return resource


def build_pool(config: Config, settings: PoolSettings, built: dict[str, Resource]) -> Pool:
    """One configured pool over the ``built`` resources it names."""
    pool = Pool(settings.name, [built[name] for name in settings.members], Route(settings.policy),
                built[settings.fallback] if settings.fallback else None, queue_limit=settings.queue_limit,
                policy=_scheduling(config.scheduling, settings), max_leases=settings.max_leases)
    pool.scheduler.leading = config.cluster is None  # a cluster member dispatches a pool once elected for it
    return pool


def _pools(config: Config) -> list[PoolSettings]:
    return [settings for settings in config.resources if isinstance(settings, PoolSettings)]


def _backed(config: Config) -> list[registry.ResourceConfig]:
    """The resources with a backend of their own: all but the pools."""
    return [settings for settings in config.resources if not isinstance(settings, PoolSettings)]


def _policy(config: Config) -> Policy:
    return Policy(max_payload_bytes=config.tasks.max_payload_bytes, require_lease=config.leases.required,
                  cancel_on_release=config.leases.cancel_tasks_on_release, retain_tasks=config.tasks.retain,
                  max_queued_bytes_per_user=config.tasks.max_queued_bytes_per_user,
                  max_queued_bytes_per_resource=config.tasks.max_queued_bytes_per_resource,
                  max_leases_per_user=config.leases.max_per_user, list_page_size=config.tasks.list_page_size,
                  exclusive_wait=config.leases.exclusive_wait_seconds,
                  max_exclusive_wait=config.leases.max_exclusive_wait_seconds)


def _store(config: Config) -> Journal | PostgresStore | None:
    """Where tasks are recorded: PostgreSQL with ``[cluster]``, else the SQLite journal unless it is off."""
    journal, cluster = config.journal, config.cluster
    retain_seconds, max_result_bytes = journal.retain_results_days * 86_400, journal.max_results_bytes
    if cluster is not None:
        return PostgresStore(cluster.dsn, member=cluster.member, password_file=cluster.password_file,
                             connect_timeout=cluster.connect_timeout_seconds,
                             commit_timeout=cluster.commit_timeout_seconds, retain_seconds=retain_seconds,
                             max_result_bytes=max_result_bytes)
    return Journal(journal.path, commit_timeout=journal.commit_timeout_seconds, retain_seconds=retain_seconds,
                   max_result_bytes=max_result_bytes) if journal.enabled else None


def _eligible(config: Config) -> list[str]:
    """The resources this member may dispatch (cluster mode)."""
    return [settings.name for settings in config.resources if settings.dispatch]


def _validation(settings: ValidationSettings) -> Validation:
    bounds = InputBounds(max_decoded_bytes=settings.max_decoded_bytes, max_circuit_bytes=settings.max_circuit_bytes,
                         max_layout_traps=settings.max_layout_traps)
    return Validation(ValidationLimits(workers=settings.workers, memory_mb=settings.memory_mb,
                                       timeout_seconds=settings.timeout_seconds,
                                       running_per_user=settings.running_per_user,
                                       waiting_per_user=settings.waiting_per_user,
                                       waiting_bytes_per_user=settings.waiting_bytes_per_user,
                                       remembered=settings.remembered, bounds=bounds))


def _slurm(settings: SlurmSettings) -> SlurmJobs | None:
    if not settings.check_jobs:
        return None
    return SlurmJobs(settings.squeue, cache_seconds=settings.cache_seconds, timeout=settings.timeout_seconds,
                     slurm_conf=settings.slurm_conf)


def _scontrol(settings: SlurmSettings) -> Scontrol:
    return Scontrol(settings.scontrol, timeout=settings.timeout_seconds, slurm_conf=settings.slurm_conf)


def _timings(settings: SlurmSettings) -> dict[str, float]:
    """The Slurm gate's timings."""
    return {"debounce": settings.gate_debounce_seconds, "retry": settings.gate_retry_seconds,
            "recheck": settings.gate_recheck_seconds}


def _plan(windows: Windows, settings: WindowsSettings) -> None:
    """``[windows]``: its settings and the maintenance windows the config file plans."""
    windows.tune(nominal_run_seconds=settings.nominal_run_seconds, max_per_resource=settings.max_per_resource,
                 group_cache_seconds=settings.group_cache_seconds)
    windows.plan(planned(window.resource, window.start.timestamp(), window.end.timestamp(), window.reason)
                 for window in settings.maintenance)


def _gated(config: Config) -> dict[str, str]:
    """The resources whose Slurm license is gated, with that license."""
    return {settings.name: settings.slurm_license or settings.name for settings in config.resources
            if settings.slurm_gate}


def _scheduling(defaults: SchedulingSettings, settings: ResourceSettings) -> SchedulingPolicy:
    """One resource's scheduling rules: the ``[scheduling]`` section, overridden by the resource's own keys."""

    def pick(own: int | None, default: int) -> int:
        return default if own is None else own

    return SchedulingPolicy(
        classes=tuple(PriorityClass(cls.name, cls.admin_only) for cls in defaults.classes),
        default_class=settings.default_class or defaults.default_class,
        weights=UsageWeights(defaults.qpu_second_weight, defaults.shot_weight, defaults.usage_half_life_seconds),
        max_queued_per_owner=pick(settings.max_queued_per_owner, defaults.max_queued_per_owner),
        max_running_per_owner=pick(settings.max_running_per_owner, defaults.max_running_per_owner),
        max_shots_per_task=pick(settings.max_shots_per_task, defaults.max_shots_per_task))


class Daemon:
    """One qrmid: a broker behind a gRPC server with health checking and reflection."""

    def __init__(self, config: Config, path: Path | None = None) -> None:
        self.config = config
        self.path = path  # the config file, re-read by reload(); None for the embedded default
        self.broker = build_broker(config)
        self.gate = SlurmGate(lambda: self.broker.resources, _scontrol(config.slurm), **_timings(config.slurm))
        self.gate.configure(_gated(config))
        self.broker.windows.on_maintenance = self.gate.unavailable_until  # Slurm holds a resource in maintenance
        _plan(self.broker.windows, config.windows)
        self._gating: asyncio.Task[None] | None = None
        self.reloader = Reloader(self.broker, lambda settings: build_resource(self.config, settings))
        self._reloading = asyncio.Lock()
        self.health = health.aio.HealthServicer()
        limits = config.limits
        self.limits = LimitsInterceptor(ClientLimits(limits.calls_per_second, limits.burst, limits.streams_per_client,
                                                     limits.max_field_chars))
        self.ledger = Ledger(config.metrics.accounting_records)
        self.metrics = Metrics(self.broker)
        self.broker.events.subscribe(self.ledger)
        self.broker.events.subscribe(self.metrics)
        self.broker.events.subscribe(logs.TaskLog())
        self.metrics_address: tuple[str, int] | None = None  # where /metrics is served, once started
        self.journal = _store(config)
        self.members: Members | None = None  # cluster mode: this member's link to the others, once started
        self.spool = Spool(config.journal.path.with_name(config.journal.path.name + ".spool"),
                           config.tasks.spool_above_bytes) if self.journal is not None else None
        self.servers: list[grpc.aio.Server] = []  # one per listener
        self._socket_lock = sockets.SocketLock(config.daemon.socket)
        self._bound: tuple[int, int] | None = None  # (device, inode) of the socket this daemon bound

    @property
    def socket(self) -> Path:
        return self.config.daemon.socket

    async def start(self) -> None:
        """Claim the socket path, start the backends, bind the listeners and report SERVING; a failed start
        gives the socket path up again."""
        _claim_socket(self.socket, self._socket_lock, shared=self.config.daemon.auth != "none")
        try:
            await self._start()
        except BaseException:
            self._release_socket()
            raise

    async def _start(self) -> None:
        recovered = None
        if self.journal is not None:
            try:
                recovered = await asyncio.to_thread(self.journal.open)
            except (JournalError, StoreError) as exc:
                raise StartupError(str(exc)) from None
            self.journal.start()
            self.broker.events.subscribe(self.journal)
        if self.spool is not None:
            try:
                await asyncio.to_thread(self.spool.open)
            except SpoolError as exc:
                raise StartupError(str(exc)) from None
            self.broker.payloads = self.spool
        limit = self.config.daemon.max_message_bytes
        servicer = QuantumResources(self.broker)
        metrics_service = MetricsService(self.broker, self.ledger)
        admin = AdminService(self.broker, self._reload_everywhere, self.config.auth.admin_group,
                             quarantine=self.journal, gate=self.gate)

        def register(server: grpc.aio.Server) -> None:
            pb_grpc.add_QuantumResourcesServicer_to_server(servicer, server)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            metrics_pb2_grpc.add_MetricsServiceServicer_to_server(metrics_service, server)
            admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
            reflection.enable([SERVICE, METRICS_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME], server)

        try:
            found = listeners.listeners(self.config)
            self.servers = listeners.build_servers(found, [("grpc.max_receive_message_length", limit),
                                                           ("grpc.max_send_message_length", limit),
                                                           *listeners.connection_options(self.config.daemon,
                                                                                         len(found))], register,
                                                  outer=[RpcTelemetry(self.metrics.observe_rpc)],
                                                  inner=[self.limits])
        except listeners.AuthSetupError as exc:
            raise StartupError(str(exc)) from None
        try:
            os.rename(listeners.staging_socket(self.socket), self.socket)  # replaces a stale socket at once
        except OSError as exc:
            raise StartupError(f"cannot put the socket in place at {self.socket}: {exc.strerror}") from None
        bound = os.stat(self.socket)
        self._bound = (bound.st_dev, bound.st_ino)
        await listeners.probe_munge(self.config, found)
        if any(settings.type != "noop" for settings in self.config.resources):  # noop checks nothing
            await self.broker.validation.start()  # else the workers start with the first payload to check
        await self.broker.start()
        if recovered is not None:
            self.ledger.restore(recovered.tasks)
            self.broker.allocations.restore(recovered.allocations, recovered.tasks, recovered.used)
            await self.broker.restore(recovered.tasks, recovered.leases, recovered.held, recovered.submitting,
                                      recovered.drains)
            self.broker.windows.restore(recovered.windows)
            await self.broker.store_queued()
        if isinstance(self.journal, PostgresStore):
            self.members = Members(self.journal, self.broker, _eligible(self.config),
                                   failover_seconds=self.config.cluster.failover_seconds if self.config.cluster else 10,
                                   on_reload=self._reload_as_asked, follows=dispatch_groups(self.config.resources))
            await self.members.start()
            self.broker.cluster = self.members
            self.broker.windows.claim = self.members.claim_window
        self._gate_start()
        for server in self.servers:
            await server.start()
        if self.config.metrics.address:
            try:
                self.metrics_address = self.metrics.serve(self.config.metrics.address)
            except OSError as exc:
                await self.stop()
                raise StartupError(f"cannot serve metrics on {self.config.metrics.address}: {exc.strerror}; "
                                   "choose another [metrics] address, or set it to \"\" to turn metrics off") from None
        os.chmod(self.socket, int(self.config.daemon.socket_mode, 8))
        try:
            listeners.check_socket(self.socket, self.config.daemon.auth)
        except listeners.AuthSetupError as exc:
            await self.stop()
            raise StartupError(str(exc)) from None
        for service in ("", SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s", ", ".join(self.broker.resources),
                 " and ".join(listener.describe() for listener in found))
        # the start-up's objects (Qiskit's, botocore's...) are never scanned again: a full collection then takes
        # milliseconds, not the 0.1-0.6 s that held the event loop, and with it the lanes of the jobs ending meanwhile
        gc.freeze()

    async def stop(self) -> None:
        """Take no new tasks, let running ones finish within the grace period, then leave the unfinished ones
        in the journal for the next start (or cancel them when there is no journal), close. A cluster member first
        hands its resources over to the others."""
        await self.health.enter_graceful_shutdown()
        await self.reloader.close()
        if self._gating is not None:  # reservations stay as they are: the next start reconciles them
            self._gating.cancel()
            await asyncio.gather(self._gating, return_exceptions=True)
        if self.members is not None:  # its resources move to other members at once, their tasks re-attached there
            await self.members.close()
        await self.broker.stop(self.config.daemon.shutdown_grace_seconds, keep=self.journal is not None)
        await asyncio.gather(*(server.stop(grace=1.0) for server in self.servers))
        await self.metrics.close()
        await self.broker.validation.close()
        if self.journal is not None:
            await asyncio.to_thread(self.journal.close)
        if self.spool is not None:
            await asyncio.to_thread(self.spool.close)
        self._release_socket()

    def _release_socket(self) -> None:
        """Remove the socket if it is still the one this daemon bound, and give up the socket's lock."""
        with contextlib.suppress(FileNotFoundError):
            listeners.staging_socket(self.socket).unlink()  # bound, not yet in place: start-up failed
        if self._bound is not None:
            with contextlib.suppress(FileNotFoundError):
                found = os.stat(self.socket)
                if (found.st_dev, found.st_ino) == self._bound:
                    self.socket.unlink()
            self._bound = None
        self._socket_lock.release()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, telling systemd when ready and when stopping."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _raise_open_files_limit()
        await self.start()
        reloads: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references to tasks

        def reload() -> None:
            reloads.add(task := asyncio.create_task(self._reload_on_signal(), name="qrmid reload on SIGHUP"))
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        systemd.notify("READY=1\nSTATUS=serving")
        interval = systemd.watchdog_interval()
        pinger = asyncio.create_task(systemd.watchdog(interval), name="qrmid watchdog") if interval else None
        await stop.wait()
        if pinger is not None:
            pinger.cancel()
        log.info("stopping: running tasks get %gs to finish", self.config.daemon.shutdown_grace_seconds)
        systemd.notify("STOPPING=1\nSTATUS=stopping")
        await self.stop()

    async def reload(self) -> Changes:
        """Re-read the config file and apply it without dropping a task (see ``qrmid.core.reload``): resources,
        ``[tasks]``, ``[leases]``, ``[slurm]`` and the log level. Listener keys and the sections in
        ``RESTART_SECTIONS`` are kept until a restart. InvalidArgument, with the old config kept, when the file
        is unusable."""
        if self.path is None:
            raise FailedPrecondition("the daemon runs the embedded default config: there is no file to re-read; "
                                     "start it with --config FILE")
        async with self._reloading:
            try:
                new = await asyncio.to_thread(load, self.path)
            except ConfigError as exc:
                raise InvalidArgument(f"config not reloaded: {exc}") from None
            old = self.config
            for section in RESTART_SECTIONS:
                if getattr(new, section, None) != getattr(old, section, None):
                    log.warning("reload: [%s] changed; it takes effect when the daemon restarts", section)
            daemon = old.daemon.model_copy(update={"log_level": new.daemon.log_level,
                                                   "shutdown_grace_seconds": new.daemon.shutdown_grace_seconds})
            if _pools(old) != _pools(new):
                raise InvalidArgument("config not reloaded: its pools changed, and pools are built when the daemon "
                                      "starts; restart the daemon to apply it")
            changes = await self.reloader.apply(_backed(old), _backed(new))
            self.config = new.model_copy(update={"daemon": daemon, **{
                section: getattr(old, section) for section in RESTART_SECTIONS if hasattr(old, section)}})
            self.broker.policy = _policy(self.config)
            self.broker.leases.default_ttl = self.config.leases.default_ttl_seconds
            self.broker.leases.max_ttl = self.config.leases.max_ttl_seconds
            self.broker.slurm = _slurm(self.config.slurm)
            self.gate.tune(_scontrol(self.config.slurm), **_timings(self.config.slurm))
            self.gate.configure(_gated(new))
            _plan(self.broker.windows, self.config.windows)
            self._gate_start()
            if self.members is not None:
                self.members.eligible = _eligible(self.config)
            if daemon.log_level != old.daemon.log_level:
                logs.set_level(daemon.log_level)
            log.info("reloaded %s: added %s, removed %s, changed %s", self.path, ", ".join(changes.added) or "none",
                     ", ".join(changes.removed) or "none", ", ".join(changes.changed) or "none")
            return changes

    def _gate_start(self) -> None:
        """Run the Slurm gate once a resource asks for it."""
        if self._gating is None and self.gate.views():
            self._gating = asyncio.create_task(self.gate.run(), name="qrmid slurm gate")

    async def _reload_everywhere(self) -> Changes:
        """An admin's reload: this member's config file, then (cluster mode) every other member's own."""
        changes = await self.reload()
        if self.members is not None:
            await self.members.announce_reload()
        return changes

    async def _reload_on_signal(self) -> None:
        log.info("SIGHUP: reloading %s", self.path)
        await self._reload_logged()

    async def _reload_as_asked(self) -> None:
        log.info("another member reloaded its config at an admin's request: reloading %s", self.path)
        await self._reload_logged()

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except (InvalidArgument, FailedPrecondition) as exc:
            log.error("reload failed, the old config stays: %s", exc)


def _raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one: every connection takes a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("open files limit raised from %d to %d", soft, hard)


def _claim_socket(path: Path, lock: sockets.SocketLock, shared: bool = False) -> None:
    """Make the socket's directory (0700 when we create it, 0755 when callers authenticate so others may reach
    the socket), refuse one another user could write to, take the socket's lock for the daemon's life, and clear
    a stale socket; StartupError when another daemon serves there or the directory is unsafe."""
    if max(len(os.fsencode(path)), len(os.fsencode(listeners.staging_socket(path)))) > MAX_SOCKET_PATH:
        raise StartupError(f"socket path {path} is longer than the {MAX_SOCKET_PATH} bytes Unix sockets allow")
    try:
        sockets.make_directories(path.parent, 0o755 if shared else 0o700, os.geteuid())
        sockets.check_directories(path.parent, os.geteuid())
    except sockets.UnsafeSocket as exc:
        raise StartupError(f"refusing to serve on {path}: {exc}") from None
    except OSError as exc:
        raise StartupError(f"cannot make the socket directory {path.parent}: {exc.strerror}") from None
    try:
        locked = lock.acquire()
    except OSError as exc:
        raise StartupError(f"cannot lock {lock.path}: {exc.strerror}") from None
    if not locked:
        raise StartupError(f"another daemon is already serving on {path} (or starting: it holds {lock.path}); "
                           "stop it, or give this one another [daemon] socket")
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        pass  # left behind by a daemon that died: the new socket replaces it
    else:
        lock.release()
        raise StartupError(f"another daemon is already serving on {path} (one that takes no lock); stop it, or "
                           "give this one another [daemon] socket")
    finally:
        probe.close()
