"""QRMI's Qiskit primitives V2 over a ``QuantumResource``, with ``qrmi.primitives``' names and options.

Circuits travel QPY-encoded (``support_qiskit``), which keeps parameter order exact, where ``qrmi`` sends
OpenQASM 3.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2, PrimitiveResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub, EstimatorPubLike
from qiskit.primitives.containers.sampler_pub import SamplerPub, SamplerPubLike
from qiskit.providers import JobStatus
from qiskit.providers.jobstatus import JOB_FINAL_STATES
from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder

from qrmid.integrations.qiskit import EstimatorOptions, PrimitiveJob, SamplerOptions, estimator_input, sampler_input
from qrmid.qrmi.models import Payload, TaskStatus
from qrmid.qrmi.resource import QuantumResource

STATUS_MAP = {
    TaskStatus.Queued: JobStatus.QUEUED,
    TaskStatus.Running: JobStatus.RUNNING,
    TaskStatus.Completed: JobStatus.DONE,
    TaskStatus.Failed: JobStatus.ERROR,
    TaskStatus.Cancelled: JobStatus.CANCELLED,
}


class RuntimeJobV2(PrimitiveJob):
    """A primitive job on a QRMI resource; ``delete_job`` stops an unfinished task when the job is collected."""

    def __init__(self, qrmi: QuantumResource, job_id: str, *, delete_job: bool = False) -> None:
        super().__init__(job_id)
        self._qrmi = qrmi
        self._last_status: JobStatus | None = None
        self._result: PrimitiveResult | None = None
        self._delete_job = delete_job

    def __del__(self) -> None:
        if self._delete_job and self._last_status not in JOB_FINAL_STATES:
            with contextlib.suppress(Exception):  # at interpreter exit the channel may be gone already
                self._qrmi.task_stop(self._job_id)

    def cancel(self) -> None:
        self._qrmi.task_stop(self._job_id)

    def result(self) -> PrimitiveResult:
        """Wait for the task and decode its result; ``TaskNotReadyError`` if it failed or was cancelled."""
        if self._result is None:
            self._last_status = STATUS_MAP[self._qrmi._wait(self._job_id)]
            self._result = ResultDecoder.decode(self._qrmi.task_result(self._job_id).value)
        return self._result

    def status(self) -> JobStatus:
        if self._last_status not in JOB_FINAL_STATES:
            self._last_status = STATUS_MAP[self._qrmi.task_status(self._job_id)]
        return self._last_status

    def logs(self) -> str:
        return self._qrmi.task_logs(self._job_id)


class QRMIBaseSamplerV2(BaseSamplerV2):
    """Sampler V2 on a QRMI resource; ``options``: ``default_shots`` (1024), ``run_options``."""

    def __init__(self, qrmi: QuantumResource, *, options: dict[str, Any] | None = None) -> None:
        self._qrmi = qrmi
        self._options = SamplerOptions(**(options or {}))

    def run(self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None) -> RuntimeJobV2:
        shots = self._options.default_shots if shots is None else shots
        coerced = [SamplerPub.coerce(pub, shots) for pub in pubs]
        text = sampler_input(coerced, shots, self._options.run_options, self._options.circuit_format)
        job_id = self._qrmi.task_start(Payload.QiskitPrimitive(input=text, program_id="sampler"))
        return RuntimeJobV2(self._qrmi, job_id, delete_job=True)


class QRMIBaseEstimatorV2(BaseEstimatorV2):
    """Estimator V2 on a QRMI resource; ``options``: ``default_precision`` (0.015625), ``run_options``."""

    def __init__(self, qrmi: QuantumResource, *, options: dict[str, Any] | None = None) -> None:
        self._qrmi = qrmi
        self._options = EstimatorOptions(**(options or {}))

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None) -> RuntimeJobV2:
        precision = self._options.default_precision if precision is None else precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        text = estimator_input(coerced, precision, self._options.run_options, self._options.circuit_format)
        job_id = self._qrmi.task_start(Payload.QiskitPrimitive(input=text, program_id="estimator"))
        return RuntimeJobV2(self._qrmi, job_id, delete_job=True)

