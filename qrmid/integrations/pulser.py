"""A Pulser ``RemoteConnection`` backed by qrmid, for ``local-pulser`` and ``pasqal-cloud`` resources.

    connection = QrmidConnection("local-pulser")
    device = connection.fetch_available_devices()["AnalogDevice"]     # from the resource's target
    results = QPUBackend(sequence, connection).run([{"runs": 500}], wait=True)
    counts = results[0].final_bitstrings

Each job (one entry of ``job_params``) is one qrmid task, run by one RunTask call that this connection follows
in the background (``qrmid.client.Client.launch``): statuses and results come from that call. A batch is a group of tasks: a closed batch's id is
its task ids joined by ``|``, so any connection to the daemon can follow it; an open batch
(``backend.open_batch()``) has an ``open-…`` id known to this connection, and takes jobs until it is closed.
qrmid itself packs tasks into Pasqal Cloud batches, so grouping here only affects status and results.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping
from typing import Any, cast

from pulser import Sequence
from pulser.backend.remote import (
    BatchStatus,
    JobParams,
    JobStatus,
    RemoteConnection,
    RemoteResults,
    RemoteResultsError,
)
from pulser.backend.results import Results
from pulser.devices import Device
from pulser.json.abstract_repr.deserializer import deserialize_device

from qrmid.client import Client, Run, TaskFailed, pulser_payload
from qrmid.integrations.job_env import lease_token as job_lease_token
from qrmid.v1 import quantum_resources_pb2 as pb

__all__ = ["QrmidConnection"]

JOB_STATUS = {
    pb.TASK_STATE_QUEUED: JobStatus.PENDING,
    pb.TASK_STATE_RUNNING: JobStatus.RUNNING,
    pb.TASK_STATE_COMPLETED: JobStatus.DONE,
    pb.TASK_STATE_FAILED: JobStatus.ERROR,
    pb.TASK_STATE_CANCELLED: JobStatus.CANCELED,
}
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


def devices_of(target: str) -> dict[str, Device]:
    """The Pulser devices in a resource's target (``[{"device_type", "specs"}]``), by device type."""
    return {entry["device_type"]: cast(Device, deserialize_device(entry["specs"])) for entry in json.loads(target)}


class QrmidConnection(RemoteConnection):
    """Pulser sequences run as tasks on one qrmid resource.

    ``address`` defaults to ``$QRMID_ADDRESS``; ``lease_token`` to the job's lease on ``resource``.
    """

    def __init__(self, resource: str, *, address: str | None = None, lease_token: str | None = None) -> None:
        self.resource = resource
        self.connection = Client(address)
        self.lease = job_lease_token(resource) if lease_token is None else lease_token
        self._sequences: dict[str, Sequence] = {}      # task id -> the built sequence it runs
        self._runs: dict[str, Run] = {}                # task id -> the call running it
        self._open: dict[str, list[str]] = {}          # open batch id -> its task ids
        self._closed: set[str] = set()

    def supports_open_batch(self) -> bool:
        return True

    def fetch_available_devices(self) -> dict[str, Device]:
        return devices_of(self.connection.target(self.resource))

    def submit(self, sequence: Sequence, wait: bool = False, open: bool = False, batch_id: str | None = None,
               **kwargs: Any) -> RemoteResults:
        """Start one task per job in ``job_params`` (in a new batch, or appended to the open ``batch_id``)."""
        job_params: list[JobParams] = kwargs.get("job_params") or []
        if batch_id is not None and (batch_id not in self._open or batch_id in self._closed):
            raise ValueError(f"batch {batch_id!r} is not an open batch of this connection")
        if job_params:
            sequence = self._add_measurement_to_sequence(sequence)
        task_ids = [self._start(sequence, params) for params in job_params]
        if open or batch_id is not None:
            batch_id = batch_id or f"open-{uuid.uuid4()}"
            self._open.setdefault(batch_id, []).extend(task_ids)
        else:
            if not task_ids:
                raise ValueError("'job_params' must list at least one job, e.g. [{'runs': 100}]")
            batch_id = "|".join(task_ids)
        if wait:
            for task_id in task_ids:
                with contextlib.suppress(TaskFailed):
                    self._runs[task_id].outcome()
        return RemoteResults(batch_id, self, job_ids=task_ids or None)

    def _start(self, sequence: Sequence, params: JobParams) -> str:
        if "runs" not in params:
            raise ValueError("every job needs 'runs', e.g. {'runs': 100}")
        built = sequence
        if sequence.is_parametrized() or sequence.is_register_mappable():
            built = sequence.build(**params.get("variables", {}))
        payload = pulser_payload(built.to_abstract_repr(), int(params["runs"]))
        run = self.connection.launch(self.resource, payload, lease_token=self.lease)
        self._sequences[run.id] = built
        self._runs[run.id] = run
        return run.id

    def _close_batch(self, batch_id: str) -> None:
        self._closed.add(batch_id)

    def _get_job_ids(self, batch_id: str) -> list[str]:
        return list(self._open[batch_id]) if batch_id in self._open else batch_id.split("|")

    def _statuses(self, batch_id: str) -> dict[str, JobStatus]:
        return {task_id: JOB_STATUS[self._state(task_id)] for task_id in self._get_job_ids(batch_id)}

    def _state(self, task_id: str) -> pb.TaskState:
        run = self._runs.get(task_id)
        return run.state() if run is not None else self.connection.task(task_id).state

    def _get_batch_status(self, batch_id: str) -> BatchStatus:
        statuses = set(self._statuses(batch_id).values())
        if batch_id in self._open and batch_id not in self._closed and not statuses & set(UNFINISHED):
            return BatchStatus.PENDING if not statuses else BatchStatus.RUNNING  # waits for more jobs
        if statuses & set(UNFINISHED):
            return BatchStatus.PENDING if statuses == {JobStatus.PENDING} else BatchStatus.RUNNING
        if statuses == {JobStatus.CANCELED}:
            return BatchStatus.CANCELED
        if statuses == {JobStatus.ERROR}:
            return BatchStatus.ERROR
        return BatchStatus.DONE

    def _query_job_progress(self, batch_id: str) -> Mapping[str, tuple[JobStatus, Results | None]]:
        return {task_id: (status, self._result(task_id) if status == JobStatus.DONE else None)
                for task_id, status in self._statuses(batch_id).items()}

    def _fetch_result(self, batch_id: str, job_ids: list[str] | None) -> tuple[Results, ...]:
        progress = self._query_job_progress(batch_id)
        results = []
        for task_id in job_ids or list(progress):
            if task_id not in progress:
                raise RemoteResultsError(f"job {task_id!r} is not in batch {batch_id!r}")
            status, result = progress[task_id]
            if result is None:
                raise RemoteResultsError(f"job {task_id} has no results: it is {status.name}")
            results.append(result)
        return tuple(results)

    def _result(self, task_id: str) -> Results:
        sequence = self._sequences.get(task_id)
        if sequence is None:
            raise RemoteResultsError(f"job {task_id} was not submitted through this connection; its register "
                                     "is unknown here (read its counts with qrmid's GetTaskResult)")
        counts = json.loads(self._runs[task_id].outcome()[1])["counter"]
        return Results.from_final_bitstrings(atom_order=tuple(sequence.register.qubit_ids),
                                             total_duration=sequence.get_duration(), final_bitstrings=counts)

    def cancel(self, batch_id: str) -> None:
        """Cancel the batch's unfinished tasks."""
        for task_id in self._get_job_ids(batch_id):
            self.connection.stop_task(task_id)

    def logs(self, batch_id: str) -> list[str]:
        """Each task's log, in batch order."""
        return [self.connection.logs(task_id) for task_id in self._get_job_ids(batch_id)]
