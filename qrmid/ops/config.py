"""The TOML config file: schema, embedded default, and errors that name the file, the key and the fault."""

from __future__ import annotations

import re
import socket
import stat
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from qrmid.backends.registry import ADAPTERS, ResourceConfig
from qrmid.ops import qrmi_import
from qrmid.ops.paths import default_journal, default_socket
from qrmid.ops.pool_config import AtKey, PoolSettings, ResourceEntry, check_pools

SECRET_KEY = re.compile(r"(?i)key|secret|password|token|dsn")  # values of such keys never appear in messages

MAX_LEASE_SECONDS = 366 * 86_400  # a lease lives a year at most
MAX_SHOTS = 10**12  # far above any device's, far below what a journal's 64-bit integers hold
REQUEST_ROOM = 64 << 10  # a StartTask request's fields besides the payload fit in this


class ConfigError(Exception):
    """The config cannot be used; the message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DaemonSettings(_Section):
    """``[daemon]``: listeners and process behaviour."""

    socket: Path = Field(default_factory=default_socket, description="Unix socket path")
    auth: Literal["none", "munge", "token"] = Field("none", description="how callers on the Unix socket authenticate")
    socket_mode: str = Field("0600", description="octal permissions of the socket, e.g. 0666 with auth = munge")
    tcp: str = Field("", description="also listen on HOST:PORT (needs tcp_auth; add TLS off loopback)")
    tcp_auth: Literal["munge", "token"] = Field("munge", description="how callers over TCP authenticate")
    tls_cert: Path | None = Field(None, description="PEM server certificate (chain): TLS on the TCP listener")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(None, description="PEM CA bundle: TCP clients must present a certificate it signed")
    max_message_bytes: int = Field(64 << 20, ge=1 << 20, le=(1 << 31) - 1,
                                   description="largest gRPC message accepted or sent (gRPC's limit: 2 GiB - 1)")
    shutdown_grace_seconds: float = Field(30.0, ge=0, le=3600, description="how long running tasks may finish on stop")
    idle_connection_seconds: float = Field(300.0, ge=1, le=86_400, description="close a connection without calls "
                                           "for this long (clients reconnect by themselves)")
    handshake_timeout_seconds: float = Field(10.0, ge=1, le=300, description="close a connection that has not "
                                             "completed its HTTP/2 (and TLS) handshake after this long")
    max_connections: int = Field(10_000, ge=16, le=1_000_000, description="connections open at once per listener; "
                                 "lowered to fit the open files limit, keeping descriptors for the daemon's own use")
    max_streams_per_connection: int = Field(1_000, ge=16, le=100_000, description="calls open at once on one "
                                            "connection; more wait for a free one on the client's side")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="one event per line: key=value text or JSON")
    qrmi_config: Path | None = Field(None, description="QRMI qrmi_config.json whose resources are served too "
                                     "(docs/qrmi.md)")

    @field_validator("socket_mode")
    @classmethod
    def _octal(cls, value: str, info: ValidationInfo) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError("must be an octal mode such as 0600 or 0666") from None
        if mode & 0o077 and info.data.get("auth", "none") == "none":
            raise ValueError('must not give other users access while auth = "none" (every caller would act as the '
                             'daemon\'s user): use 0600, or set auth = "munge" to let other users in')
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> DaemonSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for TLS on the TCP listener, or neither")
        if (self.tls_cert or self.tls_client_ca) and not self.tcp:
            raise ValueError("TLS settings apply to the TCP listener, but 'tcp' is not set")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert and tls_key: client certificates are checked over TLS")
        return self


class AuthSettings(_Section):
    """``[auth]``: who callers are, and which of them administer the daemon."""

    admin_group: str = Field("", description="members of this Unix group (and root) are admins")
    munge_socket: str = Field("", description="munged's socket; libmunge's default when empty")
    tokens_file: Path | None = Field(None, description="bearer tokens of services (auth = token); mode 0600")
    munge_threads: int = Field(4, ge=1, le=64, description="threads that decode MUNGE credentials (their own pool)")
    failure_log_seconds: float = Field(60.0, ge=1, le=86_400, description="refused calls are logged once per "
                                       "peer and reason, then counted in one summary line per this interval")


class MetricsSettings(_Section):
    """``[metrics]``: the Prometheus endpoint and the accounting records kept for MetricsService."""

    address: str = Field("", description='serve /metrics over HTTP on HOST:PORT, e.g. "127.0.0.1:9464"; empty: off')
    accounting_records: int = Field(100_000, ge=1, le=10_000_000,
                                    description="finished tasks whose accounting records are kept")

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if value and not (host and port.isdigit() and int(port) < 65536):
            raise ValueError('must be HOST:PORT, e.g. "127.0.0.1:9464", or empty to turn the endpoint off')
        return value


class TaskSettings(_Section):
    """``[tasks]``: limits on every task."""

    max_payload_bytes: int = Field(8 << 20, ge=1024, le=1 << 30, description="largest payload accepted")
    retain: int = Field(10_000, ge=1, le=10_000_000, description="finished tasks whose status and result stay "
                        "available")
    list_page_size: int = Field(1000, ge=1, le=100_000, description="most tasks in one ListTasks answer; clients "
                                "ask for the next page")
    max_queued_bytes_per_user: int = Field(256 << 20, ge=1 << 20, le=1 << 40, description="payload bytes one user "
                                           "may have queued, all resources together")
    max_queued_bytes_per_resource: int = Field(1 << 30, ge=1 << 20, le=1 << 40, description="payload bytes queued "
                                               "on one resource, all users together")
    spool_above_bytes: int = Field(1 << 20, ge=4096, le=1 << 30, description="queued payloads larger than this wait "
                                   "for dispatch in files beside the journal, not in memory")

    @model_validator(mode="after")
    def _queued_bytes(self) -> TaskSettings:
        for key in ("max_queued_bytes_per_user", "max_queued_bytes_per_resource"):
            if getattr(self, key) < self.max_payload_bytes:
                raise ValueError(f"{key} ({getattr(self, key)}) is below max_payload_bytes "
                                 f"({self.max_payload_bytes}): no payload of the largest size could ever be queued")
        return self


class ValidationSettings(_Section):
    """``[validation]``: the worker processes that check payloads before they are queued (docs/security.md)."""

    workers: int = Field(2, ge=1, le=64, description="payload checks running at once, each in its own process")
    memory_mb: int = Field(1024, ge=64, le=1 << 20, description="memory one check may use beyond its worker's own")
    timeout_seconds: float = Field(30.0, ge=1, le=3600, description="how long one check may take")
    running_per_user: int = Field(1, ge=1, le=64, description="checks of one user running at once")
    waiting_per_user: int = Field(1000, ge=1, le=100_000, description="checks of one user waiting for a worker; "
                                  "more StartTask calls are refused")
    waiting_bytes_per_user: int = Field(64 << 20, ge=1 << 20, le=1 << 40, description="payload bytes of one user's "
                                        "checks waiting for a worker (a first one always waits)")
    remembered: int = Field(4096, ge=0, le=1_000_000, description="inputs that passed their check kept by content "
                            "hash, so the same input sent again is not checked again (0: check every input)")
    max_decoded_bytes: int = Field(64 << 20, ge=1 << 20, le=1 << 40, description="bytes the typed values of one "
                                   "Qiskit input (arrays, circuits) may inflate to, in all")
    max_circuit_bytes: int = Field(1 << 20, ge=1024, le=1 << 30, description="OpenQASM 3 text of one circuit")
    max_layout_traps: int = Field(1000, ge=1, le=1_000_000, description="traps of one Pulser register layout")


class JournalSettings(_Section):
    """``[journal]``: the record of tasks and leases a restarted daemon recovers from."""

    enabled: bool = Field(True, description="journal tasks and leases (off: a restart forgets everything)")
    path: Path = Field(default_factory=default_journal, description="the SQLite journal file (one per daemon)")
    retain_results_days: float = Field(7.0, ge=0, le=3650, description="drop finished tasks older than this "
                                       "(0: keep)")
    max_results_bytes: int = Field(1 << 30, ge=0, le=1 << 44, description="drop the oldest finished tasks past "
                                   "this total result size (0: no cap)")
    commit_timeout_seconds: float = Field(10.0, gt=0, le=600, description="how long StartTask waits for its "
                                          "task's commit before it answers UNAVAILABLE")


class ClusterSettings(_Section):
    """``[cluster]``: keep tasks, leases, results and usage in a PostgreSQL database, as one member of a site's
    cluster (docs/cluster.md), instead of the SQLite journal."""

    dsn: str = Field(min_length=1, description='libpq connection string, e.g. "host=db1 dbname=qrmid user=qrmid"')
    password_file: Path | None = Field(None, description="first line: the password (owned by the daemon's user, "
                                       "mode 0600); unset: libpq's own passfile (PGPASSFILE, ~/.pgpass)")
    member: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                        description="this member's name, unique in the cluster (default: the host name)")
    connect_timeout_seconds: float = Field(5.0, ge=1, le=300, description="how long connecting may take")
    commit_timeout_seconds: float = Field(10.0, gt=0, le=600, description="how long a call waits for its commit")
    failover_seconds: float = Field(10.0, ge=2, le=300, description="at most how long a resource goes without a "
                                    "dispatcher when its dispatcher dies or is cut off")

    @field_validator("dsn")
    @classmethod
    def _libpq(cls, value: str) -> str:
        try:
            params = conninfo_to_dict(value)
        except psycopg.ProgrammingError:  # libpq's message may quote the string: never shown
            raise ValueError("not a libpq connection string: key=value pairs (host=... dbname=... user=...) or a "
                             "postgresql:// URI") from None
        if "password" in params:
            raise ValueError("must not hold the password: put it in password_file (mode 0600) or libpq's passfile")
        return value


class LeaseSettings(_Section):
    """``[leases]``: QRMI acquire/release."""

    required: bool = Field(False, description="tasks must run under a lease")
    default_ttl_seconds: float = Field(86_400, ge=1, le=MAX_LEASE_SECONDS, description="lifetime of a lease "
                                       "that asks for none")
    max_ttl_seconds: float = Field(7 * 86_400, ge=1, le=MAX_LEASE_SECONDS, description="longest lease granted")
    cancel_tasks_on_release: bool = Field(True, description="releasing a lease cancels its unfinished tasks")
    max_per_user: int = Field(1_000, ge=1, le=1_000_000, description="live leases one user may hold, all "
                              "resources together")
    exclusive_wait_seconds: float = Field(300, gt=0, le=86_400, description="how long an exclusive Acquire that "
                                          "names no wait waits in line for its grant")
    max_exclusive_wait_seconds: float = Field(3600, gt=0, le=86_400, description="the longest wait in line an "
                                              "exclusive Acquire may ask for (a longer one is cut to it)")

    @model_validator(mode="after")
    def _waits(self) -> LeaseSettings:
        if self.exclusive_wait_seconds > self.max_exclusive_wait_seconds:
            raise ValueError(f"exclusive_wait_seconds ({self.exclusive_wait_seconds:g}) is longer than "
                             f"max_exclusive_wait_seconds ({self.max_exclusive_wait_seconds:g})")
        return self


class PriorityClassSettings(_Section):
    """One entry of ``[[scheduling.classes]]``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="class name, e.g. interactive")
    admin_only: bool = Field(False, description="only admins may queue tasks in this class")


def _default_classes() -> list[PriorityClassSettings]:
    return [PriorityClassSettings(name=name) for name in ("interactive", "production", "low")]


class SchedulingSettings(_Section):
    """``[scheduling]``: priority classes, fair share, and per-user limits (each resource may override them)."""

    classes: list[PriorityClassSettings] = Field(default_factory=_default_classes, min_length=1,
                                                 description="priority classes, highest first")
    default_class: str = Field("production", description="class of tasks that name none")
    usage_half_life_seconds: float = Field(3600.0, ge=1, le=366 * 86_400, description="how fast past usage is "
                                           "forgotten")
    qpu_second_weight: float = Field(1.0, ge=0, le=1e6, description="usage charged per second a task held a slot")
    shot_weight: float = Field(0.0, ge=0, le=1e6, description="usage charged per shot")
    max_queued_per_owner: int = Field(5_000, ge=0, le=1_000_000, description="tasks one user may have queued on a "
                                      "resource; 0: off")
    max_running_per_owner: int = Field(0, ge=0, le=1_000_000, description="tasks one user may have running on a "
                                       "resource; 0: off")
    max_shots_per_task: int = Field(0, ge=0, le=MAX_SHOTS, description="most shots one task may ask for; 0: off")

    @model_validator(mode="after")
    def _classes_known(self) -> SchedulingSettings:
        names = [cls.name for cls in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"priority class names repeat: {', '.join(names)}")
        if self.default_class not in names:
            raise ValueError(f"default_class {self.default_class!r} is not one of the classes ({', '.join(names)})")
        if not self.qpu_second_weight and not self.shot_weight:
            raise ValueError("qpu_second_weight and shot_weight are both 0: usage would not count at all")
        return self


class LimitsSettings(_Section):
    """``[limits]``: what one client (caller identity) may do at once; 0 turns a limit off."""

    calls_per_second: float = Field(100.0, ge=0, le=1e6, description="sustained calls per second per client")
    burst: int = Field(200, ge=1, le=10_000_000, description="calls a client may make at once above its rate")
    streams_per_client: int = Field(64, ge=0, le=100_000, description="RunTask/WatchTask/GetTaskResult streams open per "
                                    "client")
    max_field_chars: int = Field(1024, ge=0, le=1 << 20, description="longest text field of a request (payloads "
                                 "excepted)")


class SlurmSettings(_Section):
    """``[slurm]``: checks that a lease's Slurm job exists, runs and is its owner's; gating of resources'
    licenses."""

    check_jobs: bool = Field(False, description="ask slurmctld about the job of every Acquire that names one")
    squeue: str = Field("squeue", description="squeue command or path (Slurm 22.05 or later, for --json)")
    slurm_conf: Path | None = Field(None, description="SLURM_CONF for squeue and scontrol; unset: Slurm's default")
    cache_seconds: float = Field(5.0, ge=0, le=3600, description="how long one squeue snapshot answers checks")
    timeout_seconds: float = Field(20.0, ge=0.1, le=600, description="how long slurmctld may take to answer")
    scontrol: str = Field("scontrol", description="scontrol command or path, for the resources with slurm_gate")
    gate_debounce_seconds: float = Field(2.0, ge=0, le=600, description="how long a resource's status must hold "
                                         "before its Slurm reservation is created or deleted")
    gate_retry_seconds: float = Field(10.0, ge=0.1, le=3600, description="how soon a failed scontrol call is "
                                      "retried")
    gate_recheck_seconds: float = Field(60.0, ge=1, le=86_400, description="how often slurmctld's reservations are "
                                        "re-read, so one changed by hand is put right")


class MaintenanceSettings(_Section):
    """One entry of ``[[windows.maintenance]]``: a planned maintenance window of one resource."""

    resource: str = Field(description="the resource's name")
    start: datetime = Field(description="when it opens: a TOML date-time or ISO 8601 text; local time when it names "
                            "no zone")
    end: datetime = Field(description="when it closes, after start")
    reason: str = Field("", max_length=1024, description="shown to users, e.g. \"quarterly calibration\"")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be a time such as 2026-12-24T08:00 (local time) or "
                                 "2026-12-24T08:00+01:00") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceSettings:
        if self.end.timestamp() <= self.start.timestamp():
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self


class WindowsSettings(_Section):
    """``[windows]``: reservations and maintenance windows (docs/scheduling.md)."""

    nominal_run_seconds: float = Field(300.0, ge=1, le=86_400, description="how long a task is taken to run on a "
                                       "resource none has finished on yet: a task that would not end before a "
                                       "maintenance window waits until after it")
    max_per_resource: int = Field(100, ge=1, le=10_000, description="windows admins may plan on one resource")
    group_cache_seconds: float = Field(300.0, ge=1, le=86_400, description="how long a user's Unix groups are "
                                       "remembered, for reservations by group")
    maintenance: list[MaintenanceSettings] = Field(default_factory=list, description="planned maintenance windows")


def _embedded_resources() -> list[ResourceEntry]:
    from qrmid.backends import local_pulser, local_qiskit

    return [local_qiskit.Settings(type="local-qiskit", name="local-qiskit"),
            local_pulser.Settings(type="local-pulser", name="local-pulser")]


class Config(_Section):
    """The whole config file."""

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    tasks: TaskSettings = Field(default_factory=TaskSettings)
    leases: LeaseSettings = Field(default_factory=LeaseSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    cluster: ClusterSettings | None = None  # set: the PostgreSQL store instead of the SQLite journal
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    scheduling: SchedulingSettings = Field(default_factory=SchedulingSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    windows: WindowsSettings = Field(default_factory=WindowsSettings)
    resources: list[ResourceEntry] = Field(default_factory=_embedded_resources)
    _imported: set[str] = PrivateAttr(default_factory=set)  # names of the resources read from qrmi_config

    @model_validator(mode="after")
    def _qrmi_resources(self) -> Config:
        if self.daemon.qrmi_config is not None:  # its resources replace the embedded default, add to listed ones
            listed = self.resources if "resources" in self.model_fields_set else []
            self.resources = qrmi_import.merge(self.daemon.qrmi_config, listed)
            self._imported = {resource.name for resource in self.resources[len(listed):]}
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for resource in self.resources:
            if resource.name in seen:
                raise ValueError(f"two resources are named {resource.name!r}")
            seen.add(resource.name)
        if not self.resources:
            raise ValueError("no resources: leave 'resources' out for the embedded default, or configure some")
        return self

    @model_validator(mode="after")
    def _pools(self) -> Config:
        check_pools(self.resources)
        return self

    @model_validator(mode="after")
    def _resource_classes(self) -> Config:
        names = [cls.name for cls in self.scheduling.classes]
        for resource in self.resources:
            if resource.default_class is not None and resource.default_class not in names:
                raise ValueError(f"resource {resource.name!r}: default_class {resource.default_class!r} is not one "
                                 f"of the [scheduling] classes ({', '.join(names)})")
        return self

    @model_validator(mode="after")
    def _payload_fits_a_message(self) -> Config:
        if self.tasks.max_payload_bytes + REQUEST_ROOM > self.daemon.max_message_bytes:
            raise ValueError(f"tasks.max_payload_bytes ({self.tasks.max_payload_bytes}) leaves no room in "
                             f"daemon.max_message_bytes ({self.daemon.max_message_bytes}) for the rest of a StartTask "
                             f"request ({REQUEST_ROOM} bytes): raise max_message_bytes or lower max_payload_bytes")
        return self

    @model_validator(mode="after")
    def _tokens_file(self) -> Config:
        uses_tokens = self.daemon.auth == "token" or (self.daemon.tcp and self.daemon.tcp_auth == "token")
        if uses_tokens and self.auth.tokens_file is None:
            raise ValueError("a listener uses auth = token, but [auth] tokens_file is not set")
        return self

    @model_validator(mode="after")
    def _maintenance(self) -> Config:
        names = [resource.name for resource in self.resources]
        planned = sorted(self.windows.maintenance, key=lambda window: window.start.timestamp())
        for window in planned:
            if window.resource not in names:
                raise ValueError(f"windows.maintenance: resource {window.resource!r} is not configured (resources: "
                                 f"{', '.join(names)})")
        for index, window in enumerate(planned):
            for later in planned[index + 1:]:
                if later.resource == window.resource and later.start.timestamp() < window.end.timestamp():
                    raise ValueError(f"windows.maintenance: two windows of resource {window.resource!r} overlap "
                                     f"({window.start.isoformat()} to {window.end.isoformat()} and "
                                     f"{later.start.isoformat()} to {later.end.isoformat()}): merge them or move one")
        return self

    @model_validator(mode="after")
    def _dispatch_needs_a_cluster(self) -> Config:
        for resource in self.resources:
            if not resource.dispatch and self.cluster is None:
                raise ValueError(f"resource {resource.name!r} has dispatch = false, but only a cluster member can "
                                 "serve a resource that another member dispatches: add a [cluster] section "
                                 "(docs/cluster.md), or remove dispatch = false")
        return self

    def secret_keys(self) -> list[str]:
        """The keys of resource settings holding a secret (API keys, tokens, passwords) that is set."""
        listed = [(index, resource) for index, resource in enumerate(self.resources)
                  if resource.name not in self._imported]  # qrmi_config's own mode is checked on import
        return [f"resources[{index}].{type(resource).model_fields[name].alias or name}" for index, resource in listed
                for name, value in resource if isinstance(value, SecretStr) and value.get_secret_value()] + \
            [f"resources[{index}].environment" for index, resource in listed
             if getattr(resource, "environment", None)]  # qrmi resources: every value is kept secret


def load(path: Path | None) -> Config:
    """The config in ``path``, or the embedded default when None; ConfigError when it is unusable."""
    if path is None:
        return Config()
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = Config.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_describe(error) for error in exc.errors())) from None
    _check_private(path, config)
    return config


def _check_private(path: Path, config: Config) -> None:
    """Refuse a file holding secrets that users other than its owner can read."""
    secrets = config.secret_keys()
    mode = stat.S_IMODE(path.stat().st_mode)
    if secrets and mode & 0o077:
        raise ConfigError(f"{path}: holds secrets ({', '.join(secrets)}) but its mode {mode:04o} lets group or other "
                          f"users read it; run: chmod 600 {path}")


def _describe(error: ErrorDetails) -> str:
    parts = [part for part in error["loc"] if part not in RESOURCE_TYPES]  # drop the union's type tags
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")
    if isinstance(fault := error.get("ctx", {}).get("error"), AtKey):  # a check across keys names the one at fault
        key = fault.key
    where = f"key '{key}'" if key else "top level"
    shown = isinstance(error["input"], (str, int, float, bool)) and not SECRET_KEY.search(key)
    got = f" (got {error['input']!r})" if shown and error["type"] not in ("missing", "extra_forbidden") else ""
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] in OUT_OF_RANGE and (bounds := _range(error["loc"])):
        message = f"must be {bounds}"
    return f"{where}: {message}{got}"


RESOURCE_TYPES = frozenset({*ADAPTERS, "pool"})
OUT_OF_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
BOUND_WORDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}


def _range(loc: tuple[int | str, ...]) -> str:
    """The bounds of the numeric key at ``loc`` in words, e.g. "at least 1 and at most 256"; "" for none."""
    model: Any = Config
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        if part in RESOURCE_TYPES:  # a resource's type tag: that type's settings
            model = next(cls for cls in (*get_args(get_args(ResourceConfig)[0]), PoolSettings)
                         if part in get_args(cls.model_fields["type"].annotation))
            continue
        fields = {} if model is None else {info.alias or name: info for name, info in model.model_fields.items()}
        if part not in fields:
            return ""
        field = fields[part]
        model = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation,
                                                                                        BaseModel) else None
    if field is None:
        return ""
    bounds = [(word, getattr(item, name)) for item in field.metadata for name, word in BOUND_WORDS.items()
              if hasattr(item, name)]
    return " and ".join(f"{word} {int(value) if float(value).is_integer() else value}" for word, value in bounds)
