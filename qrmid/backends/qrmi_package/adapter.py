"""The ``qrmi`` adapter: QRMI's own client code (the ``qrmi`` package) behind qrmid's queue, one handle per thread."""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from qrmid.backends.base import (
    Adapter,
    BackendState,
    BackendStatus,
    InvalidPayload,
    JobState,
    JobStatus,
    NotDispatching,
    Output,
)
from qrmid.backends.checks import Check, InputBounds
from qrmid.backends.payloads import Payload, PayloadKind, PulserSequence, QiskitPrimitive
from qrmid.backends.qrmi_package.settings import PAYLOAD_KINDS, RESOURCE_TYPES, Settings
from qrmid.backends.qrmi_package.workers import Workers

log = logging.getLogger(__name__)
T = TypeVar("T")

_BACKEND_STATES = {"online": BackendState.ONLINE, "paused": BackendState.PAUSED, "offline": BackendState.OFFLINE}
# types whose task_stop frees what the vendor holds for a finished task (IBM: DELETE the job, freeing its lane)
_STOP_WHEN_DONE = frozenset({"ibm-quantum-system"})
_QISKIT_PROGRAMS = {"ibm-quantum-compute-service": ("sampler", "estimator", "noiselearner"),
                    "qiskit-runtime-service": ("sampler", "estimator", "noiselearner")}


class QrmiCallFailed(RuntimeError):
    """A call into the ``qrmi`` package failed; the message has every configured secret masked."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def _load_qrmi() -> Any:
    try:
        import qrmi
    except ImportError:
        raise RuntimeError("resources of type 'qrmi' need the qrmi package: pip install 'qrmi>=0.26,<0.27' "
                           "(qrmid's qrmi extra)") from None
    return qrmi


class QrmiPackage(Adapter):
    """One resource of any QRMI type. ``slots`` worker threads, each with its own ``qrmi.QuantumResource`` built
    from the config with ``QuantumResource.from_config``: no process environment variable is set or read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.payload_kinds = PAYLOAD_KINDS[settings.resource_type]
        # the payload checks' modules load here, off the event loop: Qiskit and Pulser only for the types using them
        self._qiskit: Any = _jobs("qiskit_jobs") if PayloadKind.QISKIT_PRIMITIVE in self.payload_kinds else None
        self._pulser: Any = _jobs("pulser_jobs") if PayloadKind.PULSER_SEQUENCE in self.payload_kinds else None
        config = {key: value.get_secret_value() for key, value in settings.environment.items()}
        self._secrets = sorted((value for value in config.values() if len(value) >= 4), key=len, reverse=True)
        self._workers: Workers | None = None
        self.qrmi: Any = None
        if settings.dispatch:  # else the member calls no QRMI code: the target comes through adopt_target
            self.qrmi = qrmi = _load_qrmi()
            resource_type = getattr(qrmi.ResourceType, RESOURCE_TYPES[settings.resource_type])
            self._workers = Workers(settings.name, settings.slots, lambda: qrmi.QuantumResource.from_config(
                settings.qrmi_id, resource_type, dict(config)))
        self._target = ""
        self._metadata: dict[str, str] | None = None
        self._stopped: set[str] = set()

    @property
    def workers(self) -> Workers:
        if self._workers is None:
            raise NotDispatching(self.settings.name)
        return self._workers

    @property
    def slots(self) -> int:
        return self.settings.slots

    async def close(self) -> None:
        if self._workers is not None:
            self._workers.close()

    async def status(self) -> BackendStatus:
        try:
            status = (await self._call(lambda handle: handle.status())).to_dict()
        except QrmiCallFailed as exc:
            if exc.kind != "UnsupportedFunctionError":
                raise
            accessible = await self._call(lambda handle: handle.is_accessible())
            status = {"status": "online" if accessible else "offline", "status_reason": "" if accessible
                      else "QRMI reports the resource inaccessible"}
        if self._metadata is None:
            self._metadata = {str(k): str(v) for k, v in (await self._call(lambda h: h.metadata())).items()}
        state = _BACKEND_STATES.get(str(status.get("status", "")).lower(), BackendState.OFFLINE)
        if state is BackendState.ONLINE and status.get("busy"):
            return BackendStatus(BackendState.PAUSED, "the backend is reserved or locked",
                                 status.get("pending_job_count"))
        reason = "" if state is BackendState.ONLINE else str(status.get("status_reason") or "")
        return BackendStatus(state, self._scrub(reason), status.get("pending_job_count"))

    async def target(self) -> str:
        if not self._target:
            self._target = str((await self._call(lambda handle: handle.target())).value)
        return self._target

    async def adopt_target(self, target: str) -> None:
        self._target = target  # QRMI's target text is the vendor's own: payload checks do not read it

    def metadata(self) -> dict[str, str]:
        return {"resource_type": self.settings.resource_type, **(self._metadata or {})}

    def validate(self, payload: Payload) -> Check:
        if payload.kind not in self.payload_kinds:
            raise InvalidPayload(f"QRMI type {self.settings.resource_type} does not run {payload.kind.value} payloads")
        settings = self.settings
        if isinstance(payload, QiskitPrimitive):
            programs = _QISKIT_PROGRAMS.get(settings.resource_type, ("sampler", "estimator"))
            if payload.program_id not in programs:
                raise InvalidPayload(f"program_id must be one of {', '.join(programs)}, not {payload.program_id!r}")
            if payload.program_id == "noiselearner":  # no shots to count: the service checks the rest
                return Check(_object_input, (payload.input,))
            limits = self._qiskit.Limits(max_qubits=settings.max_qubits, max_shots=settings.max_shots,
                                         max_task_shots=min(settings.max_shots, settings.max_task_shots))
            return Check(self._qiskit.check, (payload.program_id, payload.input, limits))
        assert isinstance(payload, PulserSequence)  # its runs are checked against max_shots with the sequence
        limits = self._pulser.Limits(max_atoms=settings.max_qubits, max_runs=settings.max_shots, max_duration_ns=None)
        return Check(self._pulser.check, (payload.sequence, payload.job_runs, limits))

    async def submit(self, task_id: str, payload: Payload) -> str:
        workers, qrmi = self.workers, self.qrmi
        if isinstance(payload, QiskitPrimitive):
            request = qrmi.Payload.QiskitPrimitive(input=payload.input, program_id=payload.program_id)
        else:
            request = qrmi.Payload.PasqalCloud(sequence=payload.sequence, job_runs=payload.job_runs)
        try:
            return await workers.start(lambda handle: str(handle.task_start(request)))
        except self.qrmi.QrmiError as exc:
            raise self._failed(exc) from None

    async def poll(self, ref: str) -> JobStatus:
        status = await self._call(lambda handle: handle.task_status(ref), ref)
        states = self.qrmi.TaskStatus
        if status in (states.Queued, states.Running):
            return JobStatus(JobState.RUNNING)
        if status == states.Completed:
            return JobStatus(JobState.COMPLETED)
        if status == states.Cancelled:
            return JobStatus(JobState.CANCELLED, "cancelled on the backend")
        return JobStatus(JobState.FAILED, await self._failure(ref))

    async def _failure(self, ref: str) -> str:
        """Why a task failed: QRMI tells it only through the error of task_result, or the task's logs."""
        reasons = []
        try:
            await self._call(lambda handle: handle.task_result(ref), ref)
        except QrmiCallFailed as exc:
            reasons.append(str(exc))
        try:
            logs = str(await self._call(lambda handle: handle.task_logs(ref), ref))
        except QrmiCallFailed:
            logs = ""
        if last := next((line.strip() for line in reversed(logs.splitlines()) if line.strip()), ""):
            reasons.append(f"last log line: {self._scrub(last)[:500]}")
        return "; ".join(["the backend reports the task failed", *reasons])

    async def cancel(self, ref: str) -> None:
        await self._call(lambda handle: handle.task_stop(ref), ref)
        self._stopped.add(ref)

    async def output(self, ref: str) -> Output:
        result = await self._call(lambda handle: handle.task_result(ref).value, ref)
        try:
            logs = await self._call(lambda handle: handle.task_logs(ref), ref)
        except QrmiCallFailed as exc:
            log.info("%s: no logs for task %s: %s", self.settings.name, ref, exc)
            logs = ""
        data = result.encode() if isinstance(result, str) else bytes(result)
        content_type = "text/csv" if self.settings.resource_type == "alice-bob-felis" else "application/json"
        return Output(data=data, content_type=content_type, logs=str(logs))

    async def cleanup(self, ref: str) -> None:
        try:
            if self.settings.resource_type in _STOP_WHEN_DONE and ref not in self._stopped:
                await self._call(lambda handle: handle.task_stop(ref), ref)
        finally:
            self._stopped.discard(ref)
            self.workers.unpin(ref)

    async def _call(self, call: Callable[[Any], T], ref: str = "") -> T:
        """``call(handle)`` on the worker of task ``ref`` (any worker without one); QRMI errors come back with the
        configured secrets masked."""
        workers = self.workers
        try:
            return await workers.call(call, ref)
        except self.qrmi.QrmiError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: Exception) -> QrmiCallFailed:
        return QrmiCallFailed(type(exc).__name__.rstrip("_"), self._scrub(str(exc)))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _jobs(module: str) -> Any:
    return importlib.import_module(f"qrmid.backends.{module}")


def _object_input(bounds: InputBounds, text: str) -> int:
    """Check (in a validation worker) that an input with no shots to count is a JSON object; its shots: 0."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"input is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidPayload("input nests arrays or objects too deeply to be read") from None
    if not isinstance(doc, dict):
        raise InvalidPayload("noiselearner input must be a JSON object")
    return 0
