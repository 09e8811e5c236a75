"""The TOML config file: schema, embedded default, and errors that name the file, the key and the fault."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from qrmid.backends.registry import ADAPTERS, ResourceConfig
from qrmid.ops.paths import default_socket


SECRET_KEY = re.compile(r"(?i)key|secret|password|token")  # values of such keys never appear in messages


class ConfigError(Exception):
    """The config cannot be used; the message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaemonSettings(_Section):
    """``[daemon]``: listeners and process behaviour."""

    socket: Path = Field(default_factory=default_socket, description="Unix socket path")
    socket_mode: str = Field("0600", description="octal permissions of the socket, e.g. 0660 for a group")
    tcp: str = Field("", description="also listen on HOST:PORT (insecure; keep it on loopback)")
    max_message_bytes: int = Field(64 << 20, ge=1 << 20, description="largest gRPC message accepted or sent")
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="how long running tasks may finish on stop")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("socket_mode")
    @classmethod
    def _octal(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError("must be an octal mode such as 0600 or 0660") from None
        if mode & 0o007:
            raise ValueError("must not give other users access (the last digit must be 0)")
        return value


class TaskSettings(_Section):
    """``[tasks]``: limits on every task."""

    max_payload_bytes: int = Field(8 << 20, ge=1024, description="largest payload accepted")
    retain: int = Field(10_000, ge=1, description="finished tasks whose status and result stay available")


class LeaseSettings(_Section):
    """``[leases]``: QRMI acquire/release."""

    required: bool = Field(False, description="tasks must run under a lease")
    default_ttl_seconds: float = Field(86_400, gt=0)
    max_ttl_seconds: float = Field(7 * 86_400, gt=0)
    cancel_tasks_on_release: bool = Field(True, description="releasing a lease cancels its unfinished tasks")


def _embedded_resources() -> list[ResourceConfig]:
    from qrmid.backends import local_pulser, local_qiskit

    return [local_qiskit.Settings(type="local-qiskit", name="local-qiskit"),
            local_pulser.Settings(type="local-pulser", name="local-pulser")]


class Config(_Section):
    """The whole config file."""

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    tasks: TaskSettings = Field(default_factory=TaskSettings)
    leases: LeaseSettings = Field(default_factory=LeaseSettings)
    resources: list[ResourceConfig] = Field(default_factory=_embedded_resources)

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
        return Config.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: ErrorDetails) -> str:
    parts = [part for part in error["loc"] if part not in ADAPTERS]  # drop the union's type tags
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")
    where = f"key '{key}'" if key else "top level"
    shown = isinstance(error["input"], (str, int, float, bool)) and not SECRET_KEY.search(key)
    got = f" (got {error['input']!r})" if shown and error["type"] not in ("missing", "extra_forbidden") else ""
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{where}: {message}{got}"
