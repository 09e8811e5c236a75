"""``QuantumResource`` and ``QRMIService`` with ``qrmi``'s methods, each a call to qrmid."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from qrmid.client import Client, Run, TaskFailed, pulser_payload
from qrmid.integrations.job_env import lease_token
from qrmid.qrmi.errors import (
    ConfigError,
    EnvVarNotSetError,
    QrmiError,
    TaskNotFoundError,
    UnsupportedPayloadError,
    UnsupportedResourceTypeError,
    translated,
)
from qrmid.qrmi.models import (
    TYPE_NAMES,
    PasqalCloud,
    QiskitPrimitive,
    ResourceCapacity,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    Target,
    TaskResult,
    TaskStatus,
)
from qrmid.v1 import quantum_resources_pb2 as pb

logger = logging.getLogger("qrmi")

TASK_STATUS = {
    pb.TASK_STATE_QUEUED: TaskStatus.Queued,
    pb.TASK_STATE_RUNNING: TaskStatus.Running,
    pb.TASK_STATE_COMPLETED: TaskStatus.Completed,
    pb.TASK_STATE_FAILED: TaskStatus.Failed,
    pb.TASK_STATE_CANCELLED: TaskStatus.Cancelled,
}
STATUS_CODE = {pb.RESOURCE_STATUS_ONLINE: ResourceStatusCode.Online, pb.RESOURCE_STATUS_PAUSED: ResourceStatusCode.Paused}


class QuantumResource:
    """One qrmid resource, named ``resource_id``, behind QRMI's interface.

    ``resource_type`` is reported back as given; the daemon knows what the resource really is.
    The daemon's address is ``$QRMID_ADDRESS`` (or the default socket).
    """

    def __init__(self, resource_id: str, resource_type: ResourceType, *, address: str | None = None) -> None:
        self._id = resource_id
        self._type = resource_type
        self._connection = Client(address)
        self._lease = ""  # the token of this handle's latest acquire()
        self._runs: dict[str, Run] = {}  # task id -> the RunTask call following it, until its result is taken

    @classmethod
    def from_config(cls, resource_id: str, resource_type: ResourceType, config: dict[str, str]) -> QuantumResource:
        """As the constructor: credentials live in the daemon, so vendor keys in ``config`` are not used; a
        ``QRMID_ADDRESS`` key picks the daemon."""
        return cls(resource_id, resource_type, address=config.get("QRMID_ADDRESS") or None)

    def __repr__(self) -> str:
        return f"QuantumResource(resource_id={self._id!r}, resource_type={self._type}, {self._connection.address})"

    def resource_id(self) -> str:
        return self._id

    def resource_type(self) -> ResourceType:
        return self._type

    def is_accessible(self) -> bool:
        """Whether the daemon has this resource and it is online."""
        try:
            with translated():
                return self._connection.resource(self._id).status == pb.RESOURCE_STATUS_ONLINE
        except QrmiError as exc:
            logger.warning("%s is not accessible: %s", self._id, exc)
            return False

    def status(self) -> ResourceStatus:
        with translated():
            resource = self._connection.resource(self._id)
        capacity = ResourceCapacity(available_slots=resource.capacity.slots_free,
                                    max_slots=resource.capacity.slots_total)
        return ResourceStatus(status=STATUS_CODE.get(resource.status, ResourceStatusCode.Offline),
                              status_reason=resource.status_reason or None,
                              busy=resource.capacity.slots_free == 0 or resource.queue_length > 0,
                              capacity=capacity, pending_job_count=resource.queue_length)

    def acquire(self) -> str:
        """Take a real lease on the resource (bound to ``$QRMI_JOB_ID`` when set) and return its token; this
        handle's tasks run under it until it is released."""
        with translated():
            lease = self._connection.acquire(self._id, os.environ.get("QRMI_JOB_ID", ""))
        self._lease = lease.token
        return lease.token

    def release(self, id: str) -> None:
        """End the lease ``id``; the daemon cancels its unfinished tasks when configured to."""
        with translated():
            self._connection.release(id)
        if id == self._lease:
            self._lease = ""

    def task_start(self, payload: Any) -> str:
        """Start a task; its id. Runs under this handle's lease, else the job's (``<id>_QRMI_JOB_ACQUISITION_TOKEN``).

        The task runs in one RunTask call followed in the background: ``task_status`` and ``task_result`` read what
        it streamed, without further calls."""
        if isinstance(payload, QiskitPrimitive):
            message = pb.Payload(qiskit_primitive=pb.QiskitPrimitive(program_id=payload.program_id,
                                                                     input=payload.input))
        elif isinstance(payload, PasqalCloud):
            message = pulser_payload(payload.sequence, payload.job_runs)
        else:
            raise UnsupportedPayloadError(f"qrmid runs QiskitPrimitive and PasqalCloud payloads, "
                                          f"not {type(payload).__name__}")
        with translated():
            run = self._connection.launch(self._id, message, lease_token=self._lease or lease_token(self._id))
        self._runs[run.id] = run
        return run.id

    def task_stop(self, task_id: str) -> None:
        """Cancel the task if it has not finished; its result and logs stay available."""
        with translated(TaskNotFoundError):
            stopped = self._connection.stop_task(task_id)
        if (run := self._runs.get(task_id)) is not None:
            run.task = stopped  # its call streams the same state soon after

    def task_status(self, task_id: str) -> TaskStatus:
        with translated(TaskNotFoundError):
            run = self._runs.get(task_id)
            return TASK_STATUS[run.state() if run is not None else self._connection.task(task_id).state]

    def task_result(self, task_id: str) -> TaskResult:
        """The completed task's result; ``TaskNotReadyError`` (with the reason) otherwise."""
        with translated(TaskNotFoundError):
            run = self._runs.get(task_id)
            if run is not None and run.state() == pb.TASK_STATE_COMPLETED:
                self._runs.pop(task_id, None)
                return TaskResult(value=run.outcome()[1].decode())
            return TaskResult(value=self._connection.result(task_id).decode())

    def task_logs(self, task_id: str) -> str:
        with translated(TaskNotFoundError):
            return self._connection.logs(task_id)

    def target(self) -> Target:
        with translated():
            return Target(value=self._connection.target(self._id))

    def metadata(self) -> dict[str, str]:
        with translated():
            return self._connection.metadata(self._id)

    def _wait(self, task_id: str) -> TaskStatus:
        """Block until the task finishes (one streamed call instead of polling); its final status."""
        with translated(TaskNotFoundError):
            run = self._runs.get(task_id)
            if run is None:
                return TASK_STATUS[self._connection.wait(task_id).state]
            with contextlib.suppress(TaskFailed):
                run.outcome()
            return TASK_STATUS[run.task.state]


def _job_list(name: str, legacy: str) -> list[str]:
    values = os.environ.get(name, os.environ.get(legacy))
    if values is None:
        raise EnvVarNotSetError(f"The environment variable `{name}` is not set and as such configuration "
                                "could not be loaded.")
    return values.split(os.environ.get("QRMI_LIST_DELIMITER", ",")) if values else []


def get_job_qpu_resources_and_types() -> tuple[list[str], list[str]]:
    """The job's resources and their type strings, from ``QRMI_JOB_QPU_RESOURCES``/``QRMI_JOB_QPU_TYPES`` (or
    their ``SLURM_JOB_QPU_*`` aliases); ``EnvVarNotSetError`` (a ``RuntimeError``) when one is not set, ValueError when
    their lengths differ."""
    names = _job_list("QRMI_JOB_QPU_RESOURCES", "SLURM_JOB_QPU_RESOURCES")
    types = _job_list("QRMI_JOB_QPU_TYPES", "SLURM_JOB_QPU_TYPES")
    if len(names) != len(types):
        raise ValueError(f"Inconsistent specifications of QPU resources and types. {names} vs {types}")
    if not names:
        logger.warning("No QPU resources or types specified.")
    return names, types


class QRMIService:
    """The job's accessible resources, from the job environment the Slurm plugin exports; ``EnvVarNotSetError`` when
    it lacks the lists, ``ConfigError`` when they differ in length."""

    def __init__(self) -> None:
        if error := os.environ.get("QRMI_PLUGIN_ERROR"):
            raise QrmiError(f"the Slurm plugin failed: {error}")
        try:
            names, types = get_job_qpu_resources_and_types()
        except ValueError as exc:
            raise ConfigError(f"invalid configuration: {exc}") from None
        self._resources: dict[str, QuantumResource] = {}
        for name, type_name in zip(names, types, strict=True):
            if type_name not in TYPE_NAMES:
                logger.warning("%s", UnsupportedResourceTypeError(f"skipping resource {name}: type {type_name!r} "
                                                                  "has no QRMI ResourceType"))
                continue
            resource = QuantumResource(name, TYPE_NAMES[type_name])
            if resource.is_accessible():
                self._resources[name] = resource

    def resources(self) -> list[QuantumResource]:
        return list(self._resources.values())

    def resource(self, resource_id: str) -> QuantumResource | None:
        return self._resources.get(resource_id)
